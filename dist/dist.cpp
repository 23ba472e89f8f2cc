#include "dist/dist.h"
#include "dist/mpi_detail.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#ifdef CONVNEXT_HAVE_MPI
#include <mpi.h>
#endif

namespace cnx::dist {
namespace {

const char* env(const char* name) {
    const char* v = std::getenv(name);
    return v && *v ? v : nullptr;
}

int env_int(std::initializer_list<const char*> names, int fallback) {
    for (const char* n : names)
        if (const char* v = env(n)) {
            char* end = nullptr;
            long x = std::strtol(v, &end, 10);
            if (end != v && x > 0 && x < INT_MAX) return (int)x;
        }
    return fallback;
}

bool g_initialized = false;  // we called MPI_Init
int g_rank = 0, g_world = 1, g_local = 0;

}  // namespace

bool compiled_with_mpi() {
#ifdef CONVNEXT_HAVE_MPI
    return true;
#else
    return false;
#endif
}

// Open MPI's mpirun sets OMPI_COMM_WORLD_*; MPICH/Intel MPI's Hydra and Slurm's PMI-2 set PMI_*;
// PMIx launchers (Open MPI 5, srun --mpi=pmix) set PMIX_RANK; MVAPICH sets MV2_COMM_WORLD_*.
bool launched_by_mpi() {
    for (const char* n : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK", "MV2_COMM_WORLD_SIZE"})
        if (env(n)) return true;
    return false;
}

int launcher_world_size() {
    if (!launched_by_mpi()) return 1;
    return env_int({"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_NTASKS"}, 1);
}

int local_size() {
    if (g_local > 0) return g_local;
    if (!launched_by_mpi()) return 1;
    return env_int({"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "MV2_COMM_WORLD_LOCAL_SIZE"}, 1);
}

bool initialized() { return g_initialized; }
int rank() { return g_rank; }
int world_size() { return g_world; }

#ifdef CONVNEXT_HAVE_MPI

namespace detail {

void check(int rc, const char* what) {
    if (rc == MPI_SUCCESS) return;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    fail("MPI: ", what, " failed on rank ", g_rank, ": ", std::string(msg, len));
}

// MPI counts are int: long transfers go in pieces.
constexpr int64_t kMaxChunk = 1 << 30;

void bcast_raw(void* data, int64_t bytes, int root) {
    char* p = static_cast<char*>(data);
    for (int64_t done = 0; done < bytes; done += kMaxChunk) {
        int n = (int)std::min(kMaxChunk, bytes - done);
        check(MPI_Bcast(p + done, n, MPI_BYTE, root, MPI_COMM_WORLD), "MPI_Bcast");
    }
}

MPI_Datatype mpi_type(DType dt) {
    switch (dt) {
        case DType::F32: return MPI_FLOAT;
        case DType::F64: return MPI_DOUBLE;
        default: fail("dist: gradients of dtype ", dtype_name(dt), " cannot be all-reduced");
    }
}

}  // namespace detail

namespace {
using detail::check;
using detail::mpi_type;
using detail::bcast_raw;
}  // namespace

void init(int* argc, char*** argv) {
    if (g_initialized || !launched_by_mpi()) return;
    int already = 0;
    MPI_Initialized(&already);
    if (!already) {
        int provided = 0;
        check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
        g_initialized = true;
        // Below FUNNELED the MPI library may not tolerate the loader's and OpenMP's threads even
        // though they never call it; say so rather than fail obscurely later.
        if (provided < MPI_THREAD_FUNNELED)
            std::fprintf(stderr, "warning: the MPI library offers no thread support (level %d); "
                                 "data loading threads still never call MPI\n", provided);
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_world);
    // Errors come back as codes that check() turns into exceptions naming the call.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm node;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_rank, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
        MPI_Comm_size(node, &g_local);
        MPI_Comm_free(&node);
    }
}

void finalize() {
    if (!g_initialized) return;
    int done = 0;
    MPI_Finalized(&done);
    if (!done) MPI_Finalize();
    g_initialized = false;
    g_rank = 0, g_world = 1, g_local = 0;
}

void abort(int code) {
    std::fflush(stdout);
    std::fflush(stderr);
    int running = 0, done = 0;
    MPI_Initialized(&running);
    if (running) MPI_Finalized(&done);
    if (running && !done) MPI_Abort(MPI_COMM_WORLD, code);
    std::exit(code);
}

void barrier() {
    if (g_world > 1) check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
}

std::string broadcast_bytes(const std::string& bytes, int root) {
    if (g_world == 1) return bytes;
    int64_t n = (int64_t)bytes.size();
    check(MPI_Bcast(&n, 1, MPI_INT64_T, root, MPI_COMM_WORLD), "MPI_Bcast");
    std::string out = g_rank == root ? bytes : std::string((size_t)n, '\0');
    bcast_raw(out.data(), n, root);
    return out;
}

void allreduce_sum(double* values, int64_t n) {
    if (g_world == 1 || n == 0) return;
    CNX_CHECK(n <= INT_MAX, "dist::allreduce_sum: ", n, " values at once");
    check(MPI_Allreduce(MPI_IN_PLACE, values, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
}

void allreduce_sum(int64_t* values, int64_t n) {
    if (g_world == 1 || n == 0) return;
    CNX_CHECK(n <= INT_MAX, "dist::allreduce_sum: ", n, " values at once");
    check(MPI_Allreduce(MPI_IN_PLACE, values, (int)n, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
}

std::vector<std::string> allgather_strings(const std::string& s) {
    if (g_world == 1) return {s};
    CNX_CHECK(s.size() < (size_t)INT_MAX / (size_t)g_world, "dist::allgather_strings: ", s.size(), " bytes");
    int len = (int)s.size();
    std::vector<int> lens(g_world), offsets(g_world);
    check(MPI_Allgather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, MPI_COMM_WORLD), "MPI_Allgather");
    int total = 0;
    for (int r = 0; r < g_world; ++r) offsets[r] = total, total += lens[r];
    std::string all((size_t)total, '\0');
    check(MPI_Allgatherv(s.data(), len, MPI_CHAR, all.data(), lens.data(), offsets.data(), MPI_CHAR, MPI_COMM_WORLD),
          "MPI_Allgatherv");
    std::vector<std::string> out;
    for (int r = 0; r < g_world; ++r) out.push_back(all.substr(offsets[r], lens[r]));
    return out;
}

void broadcast(const NamedTensors& tensors, int root) {
    if (g_world == 1) return;
    // The layout first: a rank built with another model or class count must fail loudly, not
    // receive bytes into tensors of another shape.
    std::string sig;
    for (auto& [name, t] : tensors) sig += name + " " + dtype_name(t.dtype()) + shape_str(t.shape()) + "\n";
    std::string root_sig = broadcast_bytes(sig, root);
    // Every rank learns whether any rank differs, so all of them fail together instead of the
    // matching ones waiting for data that never comes.
    int same = root_sig == sig, all_same = 0;
    check(MPI_Allreduce(&same, &all_same, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD), "MPI_Allreduce");
    if (!same) {
        size_t i = 0;
        while (i < sig.size() && i < root_sig.size() && sig[i] == root_sig[i]) ++i;
        size_t a = sig.rfind('\n', i == 0 ? 0 : i - 1), b = root_sig.rfind('\n', i == 0 ? 0 : i - 1);
        a = a == std::string::npos ? 0 : a + 1, b = b == std::string::npos ? 0 : b + 1;
        auto line = [](const std::string& s, size_t from) {
            size_t e = s.find('\n', from);
            return from >= s.size() ? std::string("(nothing)") : s.substr(from, e - from);
        };
        fail("dist::broadcast: rank ", g_rank, " holds '", line(sig, a), "' where rank ", root, " holds '",
             line(root_sig, b), "' (the ranks built different models?)");
    }
    CNX_CHECK(all_same, "dist::broadcast: another rank's tensors differ from rank ", root,
              "'s (the ranks built different models?)");
    for (auto& [name, t] : tensors) bcast_raw(const_cast<Tensor&>(t).raw_data(), (int64_t)t.nbytes(), root);
}

#else  // built without MPI: one process, every collective is the identity

void init(int*, char***) {
    int k = launcher_world_size();
    CNX_CHECK(k <= 1, "launched by mpirun with ", k,
              " ranks, but this convnext was built without MPI (install libopenmpi-dev and rebuild with "
              "-DCONVNEXT_MPI=ON); each rank would train alone");
}
void finalize() {}
void abort(int code) {
    std::fflush(stdout);
    std::fflush(stderr);
    std::exit(code);
}
void barrier() {}
std::string broadcast_bytes(const std::string& bytes, int) { return bytes; }
void allreduce_sum(double*, int64_t) {}
void allreduce_sum(int64_t*, int64_t) {}
std::vector<std::string> allgather_strings(const std::string& s) { return {s}; }
void broadcast(const NamedTensors&, int) {}

#endif

}  // namespace cnx::dist

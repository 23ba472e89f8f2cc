#include "io/pth.h"

#include <cstring>
#include <map>
#include <unordered_map>

#include "core/error.h"
#include "io/zip_reader.h"

namespace cnx::io {

using pickle::ElemType;
using pickle::Kind;
using pickle::Object;

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "storage bytes are read as little-endian");

namespace {

template <class S>
void convert_ints(const uint8_t* src, float* dst, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        S v;
        std::memcpy(&v, src + i * sizeof(S), sizeof(S));
        dst[i] = (float)v;
    }
}

// n elements of type t at src (unaligned, little-endian) -> float32.
void to_float(ElemType t, const uint8_t* src, float* dst, size_t n) {
    switch (t) {
        case ElemType::F32: std::memcpy(dst, src, n * 4); break;
        case ElemType::F64: convert_ints<double>(src, dst, n); break;
        case ElemType::F16:
            for (size_t i = 0; i < n; ++i) dst[i] = half_bits_to_float((uint16_t)(src[2 * i] | (src[2 * i + 1] << 8)));
            break;
        case ElemType::BF16:
            for (size_t i = 0; i < n; ++i) {
                uint32_t bits = (uint32_t)(src[2 * i] | (src[2 * i + 1] << 8)) << 16;
                std::memcpy(dst + i, &bits, 4);
            }
            break;
        case ElemType::I64: convert_ints<int64_t>(src, dst, n); break;
        case ElemType::I32: convert_ints<int32_t>(src, dst, n); break;
        case ElemType::I16: convert_ints<int16_t>(src, dst, n); break;
        case ElemType::I8: convert_ints<int8_t>(src, dst, n); break;
        case ElemType::U8: convert_ints<uint8_t>(src, dst, n); break;
        case ElemType::Bool:
            for (size_t i = 0; i < n; ++i) dst[i] = src[i] != 0;
            break;
    }
}

// Copies a strided view (already bounds-checked) out of a float storage, odometer over the
// outer dims and a strided inner loop.
void gather(const float* base, const Shape& sizes, const std::vector<int64_t>& strides, float* out) {
    size_t nd = sizes.size();
    if (nd == 0) {
        out[0] = base[0];
        return;
    }
    std::vector<int64_t> idx(nd, 0);
    int64_t inner = sizes[nd - 1], istride = strides[nd - 1];
    int64_t outer = shape_numel(sizes) / inner;
    int64_t off = 0;
    for (int64_t o = 0; o < outer; ++o) {
        for (int64_t i = 0; i < inner; ++i) *out++ = base[off + i * istride];
        for (size_t d = nd - 1; d-- > 0;) {
            off += strides[d];
            if (++idx[d] < sizes[d]) break;
            off -= strides[d] * sizes[d];
            idx[d] = 0;
        }
    }
}

std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s.empty() ? "(none)" : s;
}

// Builds tensors from the unpickled objects and the zip's storage entries.
class Materializer {
public:
    Materializer(const ZipReader& zip, const pickle::Unpickler& up, std::string prefix, uint64_t budget)
        : zip_(zip), up_(up), prefix_(std::move(prefix)), budget_(budget) {}

    Tensor tensor(const std::string& name, const Object& t) {
        const Object& st = up_.obj(t.items.at(0));
        Tensor storage = storage_tensor(st);
        const int64_t storage_numel = storage.numel();
        const Shape& sizes = t.sizes;
        int64_t numel = 1, last = t.i;  // last: highest element index the view touches
        bool overflow = false;
        for (size_t d = 0; d < sizes.size(); ++d) {
            overflow |= __builtin_mul_overflow(numel, sizes[d], &numel);
            if (sizes[d] > 0) {
                int64_t span;
                overflow |= __builtin_mul_overflow(sizes[d] - 1, t.strides[d], &span);
                overflow |= __builtin_add_overflow(last, span, &last);
            }
        }
        CNX_CHECK(!overflow, "pth: tensor '", name, "' ", shape_str(sizes), " has sizes/strides that overflow");
        if (numel == 0) return zeros(sizes);
        CNX_CHECK(last < storage_numel, "pth: tensor '", name, "' ", shape_str(sizes), " with strides ",
                  shape_str(t.strides), " at offset ", t.i, " reaches element ", last, " but storage '", st.s,
                  "' has ", storage_numel, " elements");
        bool contiguous = true;
        int64_t expect = 1;
        for (size_t d = sizes.size(); d-- > 0;) {
            if (sizes[d] != 1 && t.strides[d] != expect) contiguous = false;
            expect *= sizes[d];
        }
        if (contiguous) {
            // A view sharing the converted storage, like the tensors torch.load returns.
            auto impl = std::make_shared<TensorImpl>();
            impl->storage = storage.impl()->storage;
            impl->offset = t.i;
            impl->shape = sizes;
            impl->dtype = DType::F32;
            return Tensor(impl);
        }
        spend((uint64_t)numel, "tensor '" + name + "'");
        Tensor out = Tensor::empty(sizes);
        gather(storage.data<float>() + t.i, sizes, t.strides, out.data<float>());
        return out;
    }

private:
    // Caps the float32 bytes produced, so a stride-0 view or a deflate bomb cannot expand a
    // small file into gigabytes.
    void spend(uint64_t numel, const std::string& what) {
        uint64_t bytes;
        CNX_CHECK(!__builtin_mul_overflow(numel, (uint64_t)sizeof(float), &bytes) && bytes <= budget_ - used_, "pth: ", what, " needs ", numel, " x 4 bytes as float32, which takes the output past ",
                  "the limit of ", budget_, " bytes for this file (a stride-0 or oversized view?)");
        used_ += bytes;
    }

    // The storage's bytes converted to a flat float32 tensor, once per storage key.
    Tensor storage_tensor(const Object& st) {
        auto it = cache_.find(st.s);
        if (it != cache_.end()) {
            CNX_CHECK(it->second.elem == st.elem && it->second.numel == st.i, "pth: storage '", st.s,
                      "' is referenced with different types or sizes");
            return it->second.tensor;
        }
        std::string entry = (prefix_.empty() ? "" : prefix_ + "/") + "data/" + st.s;
        const ZipEntry* e = zip_.find(entry);
        CNX_CHECK(e, "pth: storage '", st.s, "' has no entry '", entry, "' in the archive");
        uint64_t need;
        CNX_CHECK(!__builtin_mul_overflow((uint64_t)st.i, (uint64_t)pickle::elem_size(st.elem), &need) &&
                      need == e->size,
                  "pth: storage '", st.s, "' (", st.i, " x ", pickle::elem_name(st.elem), ") needs ",
                  (uint64_t)st.i * pickle::elem_size(st.elem), " bytes but entry '", entry, "' holds ", e->size);
        spend((uint64_t)st.i, "storage '" + st.s + "'");
        Tensor t = Tensor::empty({st.i});
        if (st.elem == ElemType::F32) {
            zip_.read_into(*e, t.data<float>());  // no intermediate copy for the common case
        } else {
            std::vector<uint8_t> bytes = zip_.read(*e);
            to_float(st.elem, bytes.data(), t.data<float>(), (size_t)st.i);
        }
        cache_.emplace(st.s, Cached{st.elem, st.i, t});
        return t;
    }

    struct Cached {
        ElemType elem;
        int64_t numel;
        Tensor tensor;
    };
    const ZipReader& zip_;
    const pickle::Unpickler& up_;
    std::string prefix_;
    uint64_t budget_, used_ = 0;
    std::unordered_map<std::string, Cached> cache_;
};

}  // namespace

bool is_pth(const uint8_t* data, size_t size) { return looks_like_zip(data, size); }

PthContents read_pth_buffer(const uint8_t* data, size_t size, const PthOptions& opt, const std::string& what) {
    if (!looks_like_zip(data, size)) {
        if (size >= 2 && data[0] == 0x80 && data[1] <= 5)
            fail("pth: '", what, "' is a bare pickle, not a torch.save zip archive (files saved by PyTorch < 1.6 or "
                 "with _use_new_zipfile_serialization=False are not supported; re-save them with a newer PyTorch)");
        fail("pth: '", what, "' is not a torch.save zip archive");
    }
    ZipOptions zo;
    zo.verify_crc = opt.verify_crc;
    uint64_t budget = opt.max_output_bytes ? opt.max_output_bytes : 4 * (uint64_t)size + (64ull << 20);
    zo.max_inflated_bytes = budget;
    ZipReader zip(data, size, what, zo);

    // The pickle is the one entry named "<prefix>/data.pkl" (or a bare "data.pkl").
    std::vector<std::string> pkls;
    for (auto& e : zip.entries()) {
        const std::string& n = e.name;
        if (n == "data.pkl" || (n.size() > 9 && n.compare(n.size() - 9, 9, "/data.pkl") == 0 &&
                                n.find('/') == n.size() - 9))
            pkls.push_back(n);
    }
    CNX_CHECK(!pkls.empty(), "pth: '", what, "' has no data.pkl entry (not a torch.save archive)");
    CNX_CHECK(pkls.size() == 1, "pth: '", what, "' has several data.pkl entries: ", join(pkls));
    PthContents out;
    out.prefix = pkls[0].size() > 9 ? pkls[0].substr(0, pkls[0].size() - 9) : "";
    const std::string dir = out.prefix.empty() ? "" : out.prefix + "/";

    if (const ZipEntry* bo = zip.find(dir + "byteorder")) {
        std::vector<uint8_t> b = zip.read(*bo);
        std::string order(b.begin(), b.end());
        CNX_CHECK(order == "little", "pth: '", what, "' stores tensors in '", order.substr(0, 16),
                  "' byte order; only little-endian files are supported");
    }

    std::vector<uint8_t> pkl = zip.read(pkls[0]);
    // Entries we do not read (an argparse.Namespace of training options, numpy scalars) may
    // name any global: they become inert names. Only the state_dict we read must be tensors.
    pickle::Limits limits = opt.limits;
    limits.keep_unknown_globals = true;
    pickle::Unpickler up(pkl.data(), pkl.size(), what + ":" + pkls[0], limits);
    uint32_t root = up.load();
    auto refuse_unknown = [&](const Object& o, const std::string& where) {
        if (o.kind == Kind::Opaque || (o.kind == Kind::Global && o.global == pickle::GlobalId::Unknown))
            fail("pth: '", what, "': ", where, ": ", pickle::refusing_global(o.s),
                 "; nothing was called. A pickled object (e.g. a whole module from torch.save(model)) cannot be "
                 "read: save its state_dict() instead");
    };
    const Object& top = up.obj(root);
    refuse_unknown(top, "the top level");
    CNX_CHECK(top.kind == Kind::Dict, "pth: '", what, "' holds ", pickle::a_kind(top.kind),
              " at the top level, expected a state_dict or a dict holding one");
    for (size_t i = 0; i < top.items.size(); i += 2) {
        const Object& k = up.obj(top.items[i]);
        if (k.kind == Kind::Str) out.top_keys.push_back(k.s);
    }

    uint32_t sd = root;
    if (!opt.key.empty()) {
        int64_t v = up.dict_get(root, opt.key);
        CNX_CHECK(v >= 0, "pth: '", what, "' has no top-level entry '", opt.key, "' (it has: ", join(out.top_keys), ")");
        refuse_unknown(up.obj((uint32_t)v), "entry '" + opt.key + "'");
        CNX_CHECK(up.obj((uint32_t)v).kind == Kind::Dict, "pth: '", what, "': entry '", opt.key, "' is ",
                  pickle::a_kind(up.obj((uint32_t)v).kind), ", not a state_dict");
        sd = (uint32_t)v;
        out.key = opt.key;
    } else {
        for (const char* k : {"model", "state_dict", "model_ema"}) {
            int64_t v = up.dict_get(root, k);
            if (v >= 0) refuse_unknown(up.obj((uint32_t)v), std::string("entry '") + k + "'");
            if (v >= 0 && up.obj((uint32_t)v).kind == Kind::Dict) {
                sd = (uint32_t)v;
                out.key = k;
                break;
            }
        }
    }

    Materializer mat(zip, up, out.prefix, budget);
    const Object& dict = up.obj(sd);
    std::unordered_map<std::string, size_t> seen;  // a repeated key overrides, as in Python
    for (size_t i = 0; i + 1 < dict.items.size(); i += 2) {
        const Object& k = up.obj(dict.items[i]);
        const Object& v = up.obj(dict.items[i + 1]);
        CNX_CHECK(k.kind == Kind::Str, "pth: '", what, "': state_dict key #", i / 2, " is ", pickle::a_kind(k.kind),
                  ", not a str");
        refuse_unknown(v, "entry '" + k.s + "'" + (out.key.empty() ? "" : " under '" + out.key + "'"));
        CNX_CHECK(v.kind == Kind::Tensor, "pth: '", what, "': entry '", k.s, "'", out.key.empty() ? "" : " under '",
                  out.key, out.key.empty() ? "" : "'", " is ", pickle::a_kind(v.kind), ", not a tensor");
        Tensor t = mat.tensor(k.s, v);
        auto [it, fresh] = seen.emplace(k.s, out.tensors.size());
        if (fresh) out.tensors.emplace_back(k.s, t);
        else out.tensors[it->second].second = t;
    }
    return out;
}

PthContents read_pth(const std::string& path, const PthOptions& options) {
    MappedFile f(path);
    return read_pth_buffer(f.data(), f.size(), options, path);
}

NamedTensors load_pth(const std::string& path, const std::string& key) {
    PthOptions o;
    o.key = key;
    return read_pth(path, o).tensors;
}

}  // namespace cnx::io

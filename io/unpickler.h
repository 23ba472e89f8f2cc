#pragma once
// A restricted unpickler for the data.pkl inside a PyTorch checkpoint.
//
// Python's pickle is a small stack machine whose GLOBAL/REDUCE opcodes can call any importable
// function, which is why loading an untrusted .pth with pickle runs arbitrary code. This
// machine only knows a fixed list of globals (OrderedDict, the two torch tensor rebuilders and
// the typed storage classes) and *interprets* them: an OrderedDict call makes a dict object, a
// _rebuild_tensor_v2 call records a tensor description. Any other global is refused when it is
// named, or kept as an inert name (Limits::keep_unknown_globals); nothing is ever executed.
//
// Objects live in an arena owned by the Unpickler and refer to each other by index, so hostile
// input that builds cycles (a list appended to itself through the memo) cannot leak memory or
// send a recursive destructor into a stack overflow.
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace cnx::io::pickle {

// Element types of torch's typed storages.
enum class ElemType : uint8_t { F32, F64, F16, BF16, I64, I32, I16, I8, U8, Bool };
size_t elem_size(ElemType t);
const char* elem_name(ElemType t);  // "float32", "float16", ...

// Opaque: what a call of a global outside the allowed list stands for when
// Limits::keep_unknown_globals is set; the call is never made (see the class comment).
enum class Kind : uint8_t { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Global, Storage, Tensor, Opaque };
const char* kind_name(Kind k);
std::string a_kind(Kind k);  // "an int", "a dict", for messages
// The error for a global outside the allowed list: "refusing global 'posix.system' (...)".
std::string refusing_global(const std::string& name);

enum class GlobalId : uint8_t { OrderedDict, RebuildTensorV2, RebuildParameter, StorageClass, Unknown };

struct Object {
    Kind kind = Kind::None;
    int64_t i = 0;                // Bool, Int; Storage: numel; Tensor: storage offset (elements)
    double f = 0;                 // Float
    std::string s;                // Str, Bytes; Global, Opaque: "module.name"; Storage: key
    std::vector<uint32_t> items;  // Tuple, List; Dict: key0, value0, key1, ...; Tensor: {storage}
    std::vector<int64_t> sizes, strides;  // Tensor
    GlobalId global = GlobalId::OrderedDict;
    ElemType elem = ElemType::F32;  // Global (StorageClass), Storage
    std::string location;           // Storage: "cpu", "cuda:0", ...
    uint32_t depth = 0;             // nesting depth, bounded by Limits::max_depth
};

struct Limits {
    size_t max_stack = 100000;     // values on the stack, marks included
    uint32_t max_depth = 1000;     // nested MARKs and nested containers
    size_t max_objects = 1u << 22;
    size_t max_memo = 1u << 22;
    uint32_t max_dims = 64;        // of a tensor
    // Off: naming any other global is an error at once. On: it becomes a Global of GlobalId::
    // Unknown, and calling, building or filling it makes an Opaque object that remembers only the
    // name (arguments and state are dropped). A whole training checkpoint can then be read for
    // its state_dict although other entries hold arbitrary objects (argparse.Namespace, numpy
    // scalars); the reader refuses an Opaque wherever it needs a value.
    bool keep_unknown_globals = false;
};

class Unpickler {
public:
    // `what` names the stream in errors ("model.pth:archive/data.pkl").
    Unpickler(const uint8_t* data, size_t size, std::string what, Limits limits = {});
    // Runs the program to STOP and returns the root object.
    uint32_t load();

    const Object& obj(uint32_t id) const { return objects_.at(id); }
    size_t num_objects() const { return objects_.size(); }
    // Dict lookup by string key (last assignment wins, as in Python); -1 if absent.
    int64_t dict_get(uint32_t dict, const std::string& key) const;
    const std::string& what() const { return what_; }

private:
    [[noreturn]] void error(const std::string& msg) const;
    uint32_t make(Object o);
    uint32_t make_simple(Kind k);
    void push(uint32_t id);
    uint32_t pop();
    uint32_t top() const;
    size_t pop_mark();  // returns the stack position of the last MARK
    const uint8_t* take(uint64_t n);
    uint8_t u8() { return *take(1); }
    std::string read_line();
    void add_child(uint32_t parent, uint32_t child);
    uint32_t make_tuple(size_t from);  // stack[from..] into a tuple, popped
    uint32_t make_global(const std::string& module, const std::string& name);
    uint32_t persistent_load(uint32_t pid);
    uint32_t call(uint32_t callable, uint32_t args, bool newobj);
    void memo_put(uint64_t idx);
    uint32_t memo_get(uint64_t idx) const;

    const uint8_t* data_;
    size_t size_;
    size_t pos_ = 0;
    size_t op_pos_ = 0;  // offset of the opcode being run, for messages
    std::string what_;
    Limits lim_;
    std::vector<Object> objects_;
    std::vector<uint32_t> stack_;
    std::vector<size_t> marks_;
    std::unordered_map<uint64_t, uint32_t> memo_;
};

}  // namespace cnx::io::pickle

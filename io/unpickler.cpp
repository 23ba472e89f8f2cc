#include "io/unpickler.h"

#include <cstring>

#include "core/error.h"

namespace cnx::io::pickle {

size_t elem_size(ElemType t) {
    switch (t) {
        case ElemType::F64: case ElemType::I64: return 8;
        case ElemType::F32: case ElemType::I32: return 4;
        case ElemType::F16: case ElemType::BF16: case ElemType::I16: return 2;
        default: return 1;
    }
}

const char* elem_name(ElemType t) {
    static const char* names[] = {"float32", "float64", "float16", "bfloat16", "int64",
                                  "int32",   "int16",   "int8",    "uint8",    "bool"};
    return names[(int)t];
}

const char* kind_name(Kind k) {
    static const char* names[] = {"None", "bool", "int",    "float",   "str",    "bytes",
                                  "tuple", "list", "dict", "global", "storage", "tensor", "object"};
    return names[(int)k];
}

std::string a_kind(Kind k) {
    std::string n = kind_name(k);
    return (k == Kind::Int || k == Kind::Opaque ? "an " : k == Kind::None ? "" : "a ") + n;
}

namespace {

// The only callables a checkpoint may name. Everything else is refused by name.
struct AllowedGlobal {
    const char* name;
    GlobalId id;
    ElemType elem;
};
const AllowedGlobal kAllowed[] = {
    {"collections.OrderedDict", GlobalId::OrderedDict, ElemType::F32},
    {"torch._utils._rebuild_tensor_v2", GlobalId::RebuildTensorV2, ElemType::F32},
    {"torch._utils._rebuild_parameter", GlobalId::RebuildParameter, ElemType::F32},
    {"torch.FloatStorage", GlobalId::StorageClass, ElemType::F32},
    {"torch.DoubleStorage", GlobalId::StorageClass, ElemType::F64},
    {"torch.HalfStorage", GlobalId::StorageClass, ElemType::F16},
    {"torch.BFloat16Storage", GlobalId::StorageClass, ElemType::BF16},
    {"torch.LongStorage", GlobalId::StorageClass, ElemType::I64},
    {"torch.IntStorage", GlobalId::StorageClass, ElemType::I32},
    {"torch.ShortStorage", GlobalId::StorageClass, ElemType::I16},
    {"torch.CharStorage", GlobalId::StorageClass, ElemType::I8},
    {"torch.ByteStorage", GlobalId::StorageClass, ElemType::U8},
    {"torch.BoolStorage", GlobalId::StorageClass, ElemType::Bool},
};

// Printable form of a name taken from the file, so an error message cannot carry control bytes.
std::string printable(const std::string& s) {
    std::string out;
    for (unsigned char c : s.substr(0, 200)) {
        if (c >= 0x20 && c < 0x7f) out += (char)c;
        else {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        }
    }
    return s.size() > 200 ? out + "..." : out;
}

}  // namespace

std::string refusing_global(const std::string& name) {
    return "refusing global '" + printable(name) +
           "' (a checkpoint may only name OrderedDict, torch tensor rebuilders and torch storage types)";
}

namespace {

// Opcodes (pickle protocols 0-5); only those run below are accepted.
enum Op : uint8_t {
    MARK = '(', STOP = '.', POP = '0', POP_MARK = '1', DUP = '2', BINFLOAT = 'G', BININT = 'J', BININT1 = 'K',
    BININT2 = 'M', NONE = 'N', BINPERSID = 'Q', REDUCE = 'R', BINSTRING = 'T', SHORT_BINSTRING = 'U',
    BINUNICODE = 'X', APPEND = 'a', BUILD = 'b', GLOBAL = 'c', DICT = 'd', EMPTY_DICT = '}', APPENDS = 'e',
    BINGET = 'h', LONG_BINGET = 'j', LIST = 'l', EMPTY_LIST = ']', BINPUT = 'q', LONG_BINPUT = 'r', SETITEM = 's',
    TUPLE = 't', EMPTY_TUPLE = ')', SETITEMS = 'u', BINBYTES = 'B', SHORT_BINBYTES = 'C',
    PROTO = 0x80, NEWOBJ = 0x81, TUPLE1 = 0x85, TUPLE2 = 0x86, TUPLE3 = 0x87, NEWTRUE = 0x88, NEWFALSE = 0x89,
    LONG1 = 0x8a, LONG4 = 0x8b, SHORT_BINUNICODE = 0x8c, BINUNICODE8 = 0x8d, BINBYTES8 = 0x8e,
    STACK_GLOBAL = 0x93, MEMOIZE = 0x94, FRAME = 0x95,
};

uint64_t le(const uint8_t* p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

}  // namespace

Unpickler::Unpickler(const uint8_t* data, size_t size, std::string what, Limits limits)
    : data_(data), size_(size), what_(std::move(what)), lim_(limits) {}

void Unpickler::error(const std::string& msg) const {
    fail("pth: ", what_, ": ", msg, " (opcode at byte ", op_pos_, ")");
}

uint32_t Unpickler::make(Object o) {
    if (objects_.size() >= lim_.max_objects) error("more than " + std::to_string(lim_.max_objects) + " objects");
    objects_.push_back(std::move(o));
    return (uint32_t)(objects_.size() - 1);
}

uint32_t Unpickler::make_simple(Kind k) {
    Object o;
    o.kind = k;
    return make(std::move(o));
}

void Unpickler::push(uint32_t id) {
    if (stack_.size() + marks_.size() >= lim_.max_stack)
        error("stack deeper than " + std::to_string(lim_.max_stack) + " entries");
    stack_.push_back(id);
}

uint32_t Unpickler::pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) error("stack underflow");
    uint32_t v = stack_.back();
    stack_.pop_back();
    return v;
}

uint32_t Unpickler::top() const {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) error("stack underflow");
    return stack_.back();
}

size_t Unpickler::pop_mark() {
    if (marks_.empty()) error("no MARK on the stack");
    size_t m = marks_.back();
    marks_.pop_back();
    return m;
}

const uint8_t* Unpickler::take(uint64_t n) {
    if (n > size_ - pos_) error("truncated: needs " + std::to_string(n) + " more bytes, " + std::to_string(size_ - pos_) + " left");
    const uint8_t* p = data_ + pos_;
    pos_ += (size_t)n;
    return p;
}

std::string Unpickler::read_line() {
    std::string s;
    while (true) {
        char c = (char)u8();
        if (c == '\n') return s;
        if (s.size() >= 1024) error("GLOBAL name longer than 1024 bytes");
        s += c;
    }
}

void Unpickler::add_child(uint32_t parent, uint32_t child) {
    uint32_t d = objects_[child].depth + 1;
    if (d > lim_.max_depth) error("objects nested deeper than " + std::to_string(lim_.max_depth));
    Object& p = objects_[parent];
    if (d > p.depth) p.depth = d;
    p.items.push_back(child);
}

uint32_t Unpickler::make_tuple(size_t from) {
    uint32_t t = make_simple(Kind::Tuple);
    for (size_t i = from; i < stack_.size(); ++i) add_child(t, stack_[i]);
    stack_.resize(from);
    return t;
}

uint32_t Unpickler::make_global(const std::string& module, const std::string& name) {
    std::string full = module + "." + name;
    for (const auto& a : kAllowed) {
        if (full == a.name) {
            Object o;
            o.kind = Kind::Global;
            o.s = full;
            o.global = a.id;
            o.elem = a.elem;
            return make(std::move(o));
        }
    }
    if (lim_.keep_unknown_globals) {
        Object o;
        o.kind = Kind::Global;
        o.s = printable(full);
        o.global = GlobalId::Unknown;
        return make(std::move(o));
    }
    error(refusing_global(full));
}

// torch.save writes each storage as the persistent id ('storage', StorageClass, key, location,
// numel); the bytes live in the zip entry data/<key>, bound later by the .pth loader.
uint32_t Unpickler::persistent_load(uint32_t pid) {
    const Object& t = objects_[pid];
    if (t.kind != Kind::Tuple || t.items.size() != 5)
        error("persistent id is " + a_kind(t.kind) + " of " + std::to_string(t.items.size()) +
              " items, expected ('storage', type, key, location, numel)");
    const Object& tag = objects_[t.items[0]];
    const Object& cls = objects_[t.items[1]];
    const Object& key = objects_[t.items[2]];
    const Object& loc = objects_[t.items[3]];
    const Object& numel = objects_[t.items[4]];
    if (tag.kind != Kind::Str || tag.s != "storage") error("persistent id does not start with 'storage'");
    if (cls.kind != Kind::Global || cls.global != GlobalId::StorageClass)
        error("persistent id names " + a_kind(cls.kind) + " " + printable(cls.s) +
              " where a storage type belongs");
    if (key.kind != Kind::Str) error("storage key is " + a_kind(key.kind) + ", not a str");
    if (loc.kind != Kind::Str) error("storage location is " + a_kind(loc.kind) + ", not a str");
    if (numel.kind != Kind::Int || numel.i < 0) error("storage size is not a non-negative int");
    Object o;
    o.kind = Kind::Storage;
    o.elem = cls.elem;
    o.s = key.s;
    o.location = loc.s;
    o.i = numel.i;
    return make(std::move(o));
}

// Interprets a call of an allowed global; see the header for why nothing is executed.
uint32_t Unpickler::call(uint32_t callable, uint32_t args_id, bool newobj) {
    const Object& fn = objects_[callable];
    if (fn.kind == Kind::Opaque || (fn.kind == Kind::Global && fn.global == GlobalId::Unknown)) {
        Object o;  // an inert stand-in: the arguments are dropped, nothing is called
        o.kind = Kind::Opaque;
        o.s = fn.s;
        return make(std::move(o));
    }
    if (fn.kind != Kind::Global) error(std::string(newobj ? "NEWOBJ" : "REDUCE") + " on " + a_kind(fn.kind));
    const Object& args = objects_[args_id];
    if (args.kind != Kind::Tuple) error(std::string("arguments of ") + fn.s + " are " + a_kind(args.kind) + ", not a tuple");
    std::vector<uint32_t> a = args.items;
    const std::string fname = fn.s;
    switch (fn.global) {
        case GlobalId::OrderedDict: {
            uint32_t d = make_simple(Kind::Dict);
            if (a.empty()) return d;
            // OrderedDict([(k, v), ...]), as older pickles write it.
            if (a.size() != 1 || objects_[a[0]].kind != Kind::List)
                error("OrderedDict called with unsupported arguments");
            std::vector<uint32_t> pairs = objects_[a[0]].items;
            for (uint32_t p : pairs) {
                const Object& kv = objects_[p];
                if ((kv.kind != Kind::Tuple && kv.kind != Kind::List) || kv.items.size() != 2)
                    error("OrderedDict item is not a (key, value) pair");
                uint32_t k = kv.items[0], v = kv.items[1];
                add_child(d, k);
                add_child(d, v);
            }
            return d;
        }
        case GlobalId::RebuildTensorV2: {
            if (newobj) error("NEWOBJ on " + fname);
            // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
            if (a.size() != 6 && a.size() != 7)
                error(fname + " called with " + std::to_string(a.size()) + " arguments, expected 6 or 7");
            const Object& st = objects_[a[0]];
            if (st.kind != Kind::Storage) error(fname + ": argument 0 is " + a_kind(st.kind) + ", not a storage");
            const Object& off = objects_[a[1]];
            if (off.kind != Kind::Int || off.i < 0) error(fname + ": storage offset is not a non-negative int");
            const Object& size = objects_[a[2]];
            const Object& stride = objects_[a[3]];
            if (size.kind != Kind::Tuple || stride.kind != Kind::Tuple)
                error(fname + ": size and stride must be tuples");
            if (size.items.size() != stride.items.size())
                error(fname + ": size has " + std::to_string(size.items.size()) + " dims but stride has " +
                      std::to_string(stride.items.size()));
            if (size.items.size() > lim_.max_dims) error(fname + ": more than " + std::to_string(lim_.max_dims) + " dims");
            Object t;
            t.kind = Kind::Tensor;
            t.i = off.i;
            t.items = {a[0]};
            for (size_t d = 0; d < size.items.size(); ++d) {
                const Object& sz = objects_[size.items[d]];
                const Object& sd = objects_[stride.items[d]];
                if (sz.kind != Kind::Int || sz.i < 0) error(fname + ": size[" + std::to_string(d) + "] is not a non-negative int");
                if (sd.kind != Kind::Int || sd.i < 0) error(fname + ": stride[" + std::to_string(d) + "] is not a non-negative int");
                t.sizes.push_back(sz.i);
                t.strides.push_back(sd.i);
            }
            t.depth = 1;
            return make(std::move(t));
        }
        case GlobalId::RebuildParameter: {
            if (newobj) error("NEWOBJ on " + fname);
            // (data, requires_grad, backward_hooks): the parameter is its data for our purposes.
            if (a.size() != 3) error(fname + " called with " + std::to_string(a.size()) + " arguments, expected 3");
            if (objects_[a[0]].kind != Kind::Tensor)
                error(fname + ": argument 0 is " + a_kind(objects_[a[0]].kind) + ", not a tensor");
            return a[0];
        }
        case GlobalId::StorageClass:
        case GlobalId::Unknown: break;
    }
    error("calling " + fname + " is not supported");
}

void Unpickler::memo_put(uint64_t idx) {
    if (memo_.size() >= lim_.max_memo && !memo_.count(idx)) error("memo larger than " + std::to_string(lim_.max_memo));
    memo_[idx] = top();
}

uint32_t Unpickler::memo_get(uint64_t idx) const {
    auto it = memo_.find(idx);
    if (it == memo_.end()) error("memo index " + std::to_string(idx) + " was never stored");
    return it->second;
}

int64_t Unpickler::dict_get(uint32_t dict, const std::string& key) const {
    const Object& d = objects_.at(dict);
    int64_t found = -1;
    for (size_t i = 0; i + 1 < d.items.size(); i += 2) {
        const Object& k = objects_[d.items[i]];
        if (k.kind == Kind::Str && k.s == key) found = d.items[i + 1];
    }
    return found;
}

uint32_t Unpickler::load() {
    while (true) {
        op_pos_ = pos_;
        if (pos_ >= size_) error("ends without STOP");
        uint8_t op = u8();
        switch (op) {
            case PROTO: {
                uint8_t v = u8();
                if (v > 5) error("unsupported pickle protocol " + std::to_string(v));
                break;
            }
            case FRAME: {
                // Framing only groups opcodes for buffered reads; the bytes follow inline.
                uint64_t n = le(take(8), 8);
                if (n > size_ - pos_) error("frame of " + std::to_string(n) + " bytes runs past the end");
                break;
            }
            case STOP: {
                // Like Python, anything left below the result is ignored.
                return pop();
            }
            case MARK:
                if (marks_.size() >= lim_.max_depth) error("MARKs nested deeper than " + std::to_string(lim_.max_depth));
                if (stack_.size() + marks_.size() >= lim_.max_stack) error("stack deeper than " + std::to_string(lim_.max_stack) + " entries");
                marks_.push_back(stack_.size());
                break;
            case POP: pop(); break;
            case POP_MARK: stack_.resize(pop_mark()); break;
            case DUP: push(top()); break;
            case NONE: push(make_simple(Kind::None)); break;
            case NEWTRUE:
            case NEWFALSE: {
                uint32_t b = make_simple(Kind::Bool);
                objects_[b].i = op == NEWTRUE;
                push(b);
                break;
            }
            case BININT:
            case BININT1:
            case BININT2:
            case LONG1:
            case LONG4: {
                int64_t v;
                if (op == BININT) v = (int32_t)(uint32_t)le(take(4), 4);
                else if (op == BININT1) v = u8();
                else if (op == BININT2) v = (int64_t)le(take(2), 2);
                else {
                    uint64_t n = op == LONG1 ? u8() : le(take(4), 4);
                    if (n > 8) error("integer of " + std::to_string(n) + " bytes does not fit in 64 bits");
                    const uint8_t* p = take(n);
                    uint64_t u = le(p, (int)n);
                    // Two's complement of n bytes: sign-extend from the top bit.
                    if (n > 0 && n < 8 && (p[n - 1] & 0x80)) u |= ~0ull << (8 * n);
                    v = (int64_t)u;
                }
                uint32_t id = make_simple(Kind::Int);
                objects_[id].i = v;
                push(id);
                break;
            }
            case BINFLOAT: {
                const uint8_t* p = take(8);
                uint64_t bits = 0;
                for (int i = 0; i < 8; ++i) bits = (bits << 8) | p[i];  // big-endian
                double d;
                std::memcpy(&d, &bits, 8);
                uint32_t id = make_simple(Kind::Float);
                objects_[id].f = d;
                push(id);
                break;
            }
            case BINUNICODE:
            case SHORT_BINUNICODE:
            case BINUNICODE8:
            case SHORT_BINSTRING:
            case BINSTRING:
            case BINBYTES:
            case SHORT_BINBYTES:
            case BINBYTES8: {
                uint64_t n;
                if (op == SHORT_BINUNICODE || op == SHORT_BINSTRING || op == SHORT_BINBYTES) n = u8();
                else if (op == BINUNICODE8 || op == BINBYTES8) n = le(take(8), 8);
                else n = le(take(4), 4);
                const uint8_t* p = take(n);
                uint32_t id = make_simple(op == BINBYTES || op == SHORT_BINBYTES || op == BINBYTES8 ? Kind::Bytes : Kind::Str);
                objects_[id].s.assign(reinterpret_cast<const char*>(p), (size_t)n);
                push(id);
                break;
            }
            case GLOBAL: {
                std::string module = read_line();
                std::string name = read_line();
                push(make_global(module, name));
                break;
            }
            case STACK_GLOBAL: {
                uint32_t name = pop(), module = pop();
                if (objects_[module].kind != Kind::Str || objects_[name].kind != Kind::Str)
                    error("STACK_GLOBAL needs two strings");
                push(make_global(objects_[module].s, objects_[name].s));
                break;
            }
            case EMPTY_TUPLE: push(make_simple(Kind::Tuple)); break;
            case EMPTY_LIST: push(make_simple(Kind::List)); break;
            case EMPTY_DICT: push(make_simple(Kind::Dict)); break;
            case TUPLE: push(make_tuple(pop_mark())); break;
            case TUPLE1:
            case TUPLE2:
            case TUPLE3: {
                size_t n = op - TUPLE1 + 1;
                size_t floor = marks_.empty() ? 0 : marks_.back();
                if (stack_.size() < floor + n) error("stack underflow");
                push(make_tuple(stack_.size() - n));
                break;
            }
            case LIST:
            case DICT: {
                size_t m = pop_mark();
                if (op == DICT && (stack_.size() - m) % 2) error("DICT with an odd number of items");
                uint32_t c = make_simple(op == LIST ? Kind::List : Kind::Dict);
                for (size_t i = m; i < stack_.size(); ++i) add_child(c, stack_[i]);
                stack_.resize(m);
                push(c);
                break;
            }
            case BINPUT: memo_put(u8()); break;
            case LONG_BINPUT: memo_put(le(take(4), 4)); break;
            case MEMOIZE: memo_put(memo_.size()); break;
            case BINGET: push(memo_get(u8())); break;
            case LONG_BINGET: push(memo_get(le(take(4), 4))); break;
            case BINPERSID: push(persistent_load(pop())); break;
            case REDUCE:
            case NEWOBJ: {
                uint32_t args = pop();
                uint32_t fn = pop();
                push(call(fn, args, op == NEWOBJ));
                break;
            }
            case BUILD: {
                uint32_t state = pop();
                (void)state;
                // OrderedDict.__reduce__ passes the instance __dict__ (torch's _metadata) as the
                // state; it carries no weights, so it is dropped.
                const Object& target = objects_[top()];
                if (target.kind != Kind::Dict && target.kind != Kind::Opaque) error(std::string("BUILD on ") + a_kind(target.kind) + " is not supported");
                break;
            }
            case APPEND: {
                uint32_t v = pop();
                uint32_t list = top();
                if (objects_[list].kind == Kind::Opaque) break;  // its contents are not kept
                if (objects_[list].kind != Kind::List) error(std::string("APPEND to ") + a_kind(objects_[list].kind));
                add_child(list, v);
                break;
            }
            case APPENDS: {
                size_t m = pop_mark();
                if (m == 0 || (!marks_.empty() && m <= marks_.back())) error("APPENDS without a list below the MARK");
                uint32_t list = stack_[m - 1];
                const bool opaque = objects_[list].kind == Kind::Opaque;
                if (!opaque && objects_[list].kind != Kind::List) error(std::string("APPENDS to ") + a_kind(objects_[list].kind));
                if (!opaque)
                    for (size_t i = m; i < stack_.size(); ++i) add_child(list, stack_[i]);
                stack_.resize(m);
                break;
            }
            case SETITEM: {
                uint32_t v = pop(), k = pop();
                uint32_t dict = top();
                if (objects_[dict].kind == Kind::Opaque) break;
                if (objects_[dict].kind != Kind::Dict) error(std::string("SETITEM on ") + a_kind(objects_[dict].kind));
                add_child(dict, k);
                add_child(dict, v);
                break;
            }
            case SETITEMS: {
                size_t m = pop_mark();
                if (m == 0 || (!marks_.empty() && m <= marks_.back())) error("SETITEMS without a dict below the MARK");
                if ((stack_.size() - m) % 2) error("SETITEMS with an odd number of items");
                uint32_t dict = stack_[m - 1];
                const bool opaque = objects_[dict].kind == Kind::Opaque;
                if (!opaque && objects_[dict].kind != Kind::Dict) error(std::string("SETITEMS on ") + a_kind(objects_[dict].kind));
                if (!opaque)
                    for (size_t i = m; i < stack_.size(); ++i) add_child(dict, stack_[i]);
                stack_.resize(m);
                break;
            }
            default: {
                char buf[8];
                std::snprintf(buf, sizeof buf, "0x%02x", op);
                error(std::string("unknown or unsupported opcode ") + buf);
            }
        }
    }
}

}  // namespace cnx::io::pickle

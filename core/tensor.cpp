#include "core/tensor.h"

#include <cmath>
#include <cstring>

#include "core/autograd.h"
#include "core/rng.h"

namespace cnx {
Tensor Tensor::empty(const Shape& shape, DType dtype) {
    for (auto d : shape) CNX_CHECK(d >= 0, "empty: negative dimension in shape ", shape_str(shape));
    auto impl = std::make_shared<TensorImpl>();
    impl->shape = shape;
    impl->dtype = dtype;
    if (!meta_mode()) impl->storage = std::make_shared<Storage>(shape_numel(shape) * dtype_size(dtype));
    return Tensor(impl);
}

void Tensor::check_defined(const char* what) const {
    CNX_CHECK(impl_ != nullptr, what, ": undefined tensor");
}

const Shape& Tensor::shape() const { check_defined("shape"); return impl_->shape; }
DType Tensor::dtype() const { check_defined("dtype"); return impl_->dtype; }

int64_t Tensor::size(int64_t d) const {
    int64_t n = dim();
    int64_t i = d < 0 ? d + n : d;
    CNX_CHECK(i >= 0 && i < n, "size: dimension ", d, " out of range for shape ", shape_str(shape()));
    return impl_->shape[i];
}

void* Tensor::raw_data() {
    check_defined("raw_data");
    CNX_CHECK(impl_->storage, "tensor ", str(), " is a meta tensor (shape only): it has no data");
    return static_cast<char*>(impl_->storage->data) + impl_->offset * dtype_size(impl_->dtype);
}
const void* Tensor::raw_data() const { return const_cast<Tensor*>(this)->raw_data(); }

bool Tensor::requires_grad() const { return impl_ && (impl_->requires_grad || impl_->grad_fn); }

Tensor& Tensor::requires_grad_(bool on) {
    check_defined("requires_grad_");
    CNX_CHECK(!impl_->grad_fn, "requires_grad_: only leaf tensors can be flagged (", str(), " is an op output)");
    impl_->requires_grad = on;
    return *this;
}

bool Tensor::is_leaf() const { return impl_ && !impl_->grad_fn; }
Tensor Tensor::grad() const { return impl_ && impl_->grad ? Tensor(impl_->grad) : Tensor(); }
void Tensor::set_grad(const Tensor& g) {
    check_defined("set_grad");
    if (g.defined())
        CNX_CHECK(g.shape() == shape(), "set_grad: gradient ", g.str(), " for tensor ", str());
    impl_->grad = g.impl_ptr();
}
void Tensor::zero_grad() { if (impl_) impl_->grad.reset(); }
void Tensor::retain_grad() const {
    check_defined("retain_grad");
    CNX_CHECK(requires_grad(), "retain_grad: tensor ", str(), " does not require grad (no gradient can reach it)");
    if (is_leaf() || retains_grad()) return;
    impl_->grad_fn->retained.push_back(impl_);
}
bool Tensor::retains_grad() const {
    if (!impl_ || !impl_->grad_fn) return false;
    for (const auto& w : impl_->grad_fn->retained)
        if (w.lock() == impl_) return true;
    return false;
}
const std::shared_ptr<Node>& Tensor::grad_fn() const {
    static const std::shared_ptr<Node> none;
    return impl_ ? impl_->grad_fn : none;
}
void Tensor::set_grad_fn(std::shared_ptr<Node> fn) { check_defined("set_grad_fn"); impl_->grad_fn = std::move(fn); }

void Tensor::backward(const Tensor& grad, bool retain_graph) const {
    check_defined("backward");
    Tensor g = grad;
    if (!g.defined()) {
        CNX_CHECK(numel() == 1, "backward: output ", str(), " is not a scalar; pass a gradient");
        g = ones(shape(), dtype());
    }
    autograd::backward(*this, g, retain_graph);
}

Tensor Tensor::detach() const {
    check_defined("detach");
    auto impl = std::make_shared<TensorImpl>();
    impl->storage = impl_->storage;
    impl->offset = impl_->offset;
    impl->shape = impl_->shape;
    impl->dtype = impl_->dtype;
    impl->name = impl_->name;
    return Tensor(impl);
}

Tensor Tensor::clone() const {
    MetaGuard meta_in_meta_out(meta_mode() || is_meta());
    Tensor out = Tensor::empty(shape(), dtype());
    if (out.is_meta()) return out;
    std::memcpy(out.raw_data(), raw_data(), nbytes());
    return out;
}

Tensor Tensor::to(DType d) const {
    if (d == dtype()) return clone();
    MetaGuard meta_in_meta_out(meta_mode() || is_meta());
    Tensor out = Tensor::empty(shape(), d);
    if (out.is_meta()) return out;
    copy_(out, *this);
    return out;
}

Tensor Tensor::reshape(const Shape& new_shape) const {
    check_defined("reshape");
    Shape s = new_shape;
    int64_t known = 1, infer = -1;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == -1) {
            CNX_CHECK(infer < 0, "reshape: more than one -1 in ", shape_str(new_shape));
            infer = (int64_t)i;
        } else {
            CNX_CHECK(s[i] >= 0, "reshape: negative size in ", shape_str(new_shape));
            known *= s[i];
        }
    }
    if (infer >= 0) {
        CNX_CHECK(known > 0 && numel() % known == 0, "reshape: cannot reshape ", shape_str(shape()), " to ",
                  shape_str(new_shape));
        s[infer] = numel() / known;
    }
    CNX_CHECK(shape_numel(s) == numel(), "reshape: cannot reshape ", shape_str(shape()), " (", numel(),
              " elements) to ", shape_str(new_shape));
    Tensor out = detach();
    out.impl()->shape = s;
    out.impl()->name.clear();
    if (autograd::records("reshape", {*this})) {
        Shape in_shape = shape();
        autograd::record("reshape", out, {*this},
                         [in_shape](const Tensor& g) -> std::vector<Tensor> { return {g.reshape(in_shape)}; });
    }
    return out;
}

double Tensor::item() const {
    CNX_CHECK(numel() == 1, "item: tensor ", str(), " has ", numel(), " elements, not one");
    if (dtype() == DType::BF16) return bf16_to_float(data<BFloat16>()[0]);
    return dtype() == DType::F32 ? (double)data<float>()[0] : data<double>()[0];
}

std::vector<double> Tensor::to_vector() const {
    CNX_CHECK(!is_meta(), "to_vector: tensor ", str(), " is a meta tensor (shape only): it has no data");
    std::vector<double> v(numel());
    if (dtype() == DType::BF16) {
        const BFloat16* p = data<BFloat16>();
        for (int64_t i = 0; i < numel(); ++i) v[i] = bf16_to_float(p[i]);
        return v;
    }
    CNX_DISPATCH(dtype(), "to_vector", {
        const scalar_t* p = data<scalar_t>();
        for (int64_t i = 0; i < numel(); ++i) v[i] = p[i];
    });
    return v;
}

const std::string& Tensor::name() const { check_defined("name"); return impl_->name; }
void Tensor::set_name(const std::string& n) { check_defined("set_name"); impl_->name = n; }
bool Tensor::same_storage(const Tensor& o) const {
    return impl_ && o.impl_ && impl_->storage && impl_->storage == o.impl_->storage;
}
std::string Tensor::str() const {
    if (!impl_) return "undefined";
    std::string s = dtype_name(impl_->dtype);
    s += shape_str(impl_->shape);
    if (!impl_->name.empty()) s = "'" + impl_->name + "' " + s;
    return s;
}

// ---- creation ----
Tensor zeros(const Shape& shape, DType dtype) {
    Tensor t = Tensor::empty(shape, dtype);
    if (t.is_meta()) return t;
    std::memset(t.raw_data(), 0, t.nbytes());
    return t;
}
Tensor ones(const Shape& shape, DType dtype) { return full(shape, 1.0, dtype); }
Tensor full(const Shape& shape, double value, DType dtype) {
    Tensor t = Tensor::empty(shape, dtype);
    fill_(t, value);
    return t;
}
Tensor arange(int64_t n, DType dtype) { return arange(0.0, (double)n, 1.0, dtype); }
Tensor arange(double start, double end, double step, DType dtype) {
    CNX_CHECK(step != 0, "arange: step is zero");
    int64_t n = std::max<int64_t>(0, (int64_t)std::ceil((end - start) / step));
    Tensor t = Tensor::empty({n}, dtype);
    CNX_DISPATCH(dtype, "arange", {
        scalar_t* p = t.data<scalar_t>();
        for (int64_t i = 0; i < n; ++i) p[i] = (scalar_t)(start + i * step);
    });
    return t;
}
namespace {
// A tensor filled in order with draws from the generator (the order makes seeded runs repeat).
template <class Draw>
Tensor drawn(const Shape& shape, DType dtype, Generator* gen, const char* op, Draw draw) {
    Generator& g = gen ? *gen : default_generator();
    Tensor t = Tensor::empty(shape, dtype);
    CNX_DISPATCH(dtype, op, {
        scalar_t* p = t.data<scalar_t>();
        for (int64_t i = 0; i < t.numel(); ++i) p[i] = (scalar_t)draw(g);
    });
    return t;
}
}  // namespace
Tensor rand(const Shape& shape, DType dtype, Generator* gen) {
    return drawn(shape, dtype, gen, "rand", [](Generator& g) { return g.uniform(); });
}
Tensor randn(const Shape& shape, DType dtype, Generator* gen) {
    return drawn(shape, dtype, gen, "randn", [](Generator& g) { return g.normal(); });
}
std::vector<Tensor> tensors_of(const NamedTensors& named) {
    std::vector<Tensor> out;
    out.reserve(named.size());
    for (const auto& kv : named) out.push_back(kv.second);
    return out;
}
Tensor from_buffer(const float* data, const Shape& shape) {
    Tensor t = Tensor::empty(shape, DType::F32);
    if (t.is_meta()) return t;
    std::memcpy(t.raw_data(), data, t.nbytes());
    return t;
}
Tensor from_buffer(const double* data, const Shape& shape) {
    Tensor t = Tensor::empty(shape, DType::F64);
    if (t.is_meta()) return t;
    std::memcpy(t.raw_data(), data, t.nbytes());
    return t;
}
Tensor from_vector(const std::vector<double>& values, const Shape& shape, DType dtype) {
    CNX_CHECK((int64_t)values.size() == shape_numel(shape), "from_vector: ", values.size(),
              " values for shape ", shape_str(shape));
    Tensor t = Tensor::empty(shape, dtype);
    CNX_DISPATCH(dtype, "from_vector", {
        scalar_t* p = t.data<scalar_t>();
        for (size_t i = 0; i < values.size(); ++i) p[i] = (scalar_t)values[i];
    });
    return t;
}
Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.dtype()); }
Tensor empty_like(const Tensor& t) { return Tensor::empty(t.shape(), t.dtype()); }

void fill_(Tensor& t, double value) {
    CNX_DISPATCH(t.dtype(), "fill_", {
        scalar_t* p = t.data<scalar_t>();
        scalar_t v = (scalar_t)value;
        for (int64_t i = 0; i < t.numel(); ++i) p[i] = v;
    });
}

void copy_(Tensor& dst, const Tensor& src) {
    CNX_CHECK(dst.numel() == src.numel(), "copy_: ", src.str(), " into ", dst.str());
    if (meta_mode()) return;
    if (dst.dtype() == src.dtype()) {
        std::memcpy(dst.raw_data(), src.raw_data(), dst.nbytes());
        return;
    }
    const int64_t n = dst.numel();
    if (dst.dtype() == DType::BF16) {  // from float32 directly, from float64 through float32
        BFloat16* d = dst.data<BFloat16>();
        if (src.dtype() == DType::F32) return bf16_from_float(src.data<float>(), d, n);
        const double* s = src.data<double>();
        for (int64_t i = 0; i < n; ++i) d[i] = float_to_bf16((float)s[i]);
        return;
    }
    CNX_DISPATCH(dst.dtype(), "copy_", {
        scalar_t* d = dst.data<scalar_t>();
        if (src.dtype() == DType::F32) {
            const float* s = src.data<float>();
            for (int64_t i = 0; i < n; ++i) d[i] = (scalar_t)s[i];
        } else if (src.dtype() == DType::BF16) {
            const BFloat16* s = src.data<BFloat16>();
            for (int64_t i = 0; i < n; ++i) d[i] = (scalar_t)bf16_to_float(s[i]);
        } else {
            const double* s = src.data<double>();
            for (int64_t i = 0; i < n; ++i) d[i] = (scalar_t)s[i];
        }
    });
}

namespace {
template <class T>
void axpy_kernel(T* dst, const T* src, T alpha, int64_t n) {
#pragma omp parallel for if (n > (1 << 16))
    for (int64_t i = 0; i < n; ++i) dst[i] += alpha * src[i];
}
}  // namespace

void add_inplace(Tensor& dst, const Tensor& src, double alpha) {
    CNX_CHECK(dst.shape() == src.shape(), "add_inplace: ", src.str(), " into ", dst.str());
    CNX_CHECK(dst.dtype() == src.dtype(), "add_inplace: dtype of ", src.str(), " differs from ", dst.str());
    CNX_DISPATCH(dst.dtype(), "add_inplace",
                 { axpy_kernel<scalar_t>(dst.data<scalar_t>(), src.data<scalar_t>(), (scalar_t)alpha, dst.numel()); });
}

}  // namespace cnx

#pragma once
// Tensor: a shape, a dtype and a view (element offset) into shared Storage. Always contiguous,
// row-major; activations are NHWC. Copying a Tensor copies a handle, like torch::Tensor.
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/storage.h"

namespace cnx {

struct Node;
class Generator;

// What an nn::Module says about a tensor it registered as a parameter; parameter groups read it.
struct ParamAttributes {
    int layer_id = -1;             // layer-wise lr decay id; -1: none assigned
    bool no_weight_decay = false;  // excluded from weight decay whatever its shape and name
};

struct TensorImpl {
    std::shared_ptr<Storage> storage;  // null for a meta tensor (shape only, see core/meta.h)
    int64_t offset = 0;  // in elements
    Shape shape;
    DType dtype = DType::F32;
    bool requires_grad = false;
    std::shared_ptr<TensorImpl> grad;  // accumulated by backward() on leaves
    std::shared_ptr<Node> grad_fn;     // set on outputs of recorded ops
    std::string name;                  // optional, used in error messages (parameters)
    ParamAttributes param;
};

class Tensor {
public:
    Tensor() = default;
    explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

    // Uninitialised memory of the given shape (a meta tensor in meta mode).
    static Tensor empty(const Shape& shape, DType dtype = DType::F32);

    bool defined() const { return impl_ != nullptr; }
    bool is_meta() const { return impl_ && !impl_->storage; }  // shape only, no data
    const Shape& shape() const;
    int64_t dim() const { return (int64_t)shape().size(); }
    int64_t size(int64_t d) const;  // negative d counts from the end
    int64_t numel() const { return shape_numel(shape()); }
    DType dtype() const;
    size_t nbytes() const { return numel() * dtype_size(dtype()); }

    template <class T> T* data();
    template <class T> const T* data() const;
    void* raw_data();
    const void* raw_data() const;

    // Autograd.
    bool requires_grad() const;
    Tensor& requires_grad_(bool on = true);  // only on leaves
    bool is_leaf() const;
    Tensor grad() const;  // undefined until a backward reaches this leaf (or retained op output)
    // Like PyTorch's retain_grad(): an op output (a non-leaf) gets its .grad filled in by the
    // backward passes that reach it, accumulated like a leaf's. How a caller reads the gradient
    // of an intermediate activation (Grad-CAM). A no-op on a leaf; an error on a tensor that does
    // not require grad.
    void retain_grad() const;
    bool retains_grad() const;
    void set_grad(const Tensor& g);
    void zero_grad();     // drops .grad (like set_to_none=True)
    const std::shared_ptr<Node>& grad_fn() const;
    void set_grad_fn(std::shared_ptr<Node> fn);
    // Runs backward from this tensor. A scalar needs no gradient argument.
    void backward(const Tensor& grad = Tensor(), bool retain_graph = false) const;

    Tensor detach() const;  // shares storage, no history
    Tensor clone() const;   // copies data, no history
    Tensor to(DType dtype) const;  // copy converted (no history); to bfloat16 rounds to nearest even
    // A view with a new shape over the same storage (one dim may be -1). Records a node when
    // the tensor requires grad, so backward flows through views.
    Tensor reshape(const Shape& shape) const;
    double item() const;  // value of a one-element tensor
    std::vector<double> to_vector() const;

    const std::string& name() const;
    void set_name(const std::string& n);

    TensorImpl* impl() const { return impl_.get(); }
    const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
    bool same_storage(const Tensor& o) const;
    std::string str() const;  // "float32[2,3]"

private:
    void check_defined(const char* what) const;
    std::shared_ptr<TensorImpl> impl_;
};

// Named tensors in a fixed order: state dicts, checkpoints, optimiser state.
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;
// The tensors of a list, in order (sharing storage).
std::vector<Tensor> tensors_of(const NamedTensors& named);

// Creation.
Tensor zeros(const Shape& shape, DType dtype = DType::F32);
Tensor ones(const Shape& shape, DType dtype = DType::F32);
Tensor full(const Shape& shape, double value, DType dtype = DType::F32);
Tensor arange(int64_t n, DType dtype = DType::F32);  // 0, 1, ..., n-1
Tensor arange(double start, double end, double step, DType dtype = DType::F32);
Tensor rand(const Shape& shape, DType dtype = DType::F32, Generator* gen = nullptr);   // U[0,1)
Tensor randn(const Shape& shape, DType dtype = DType::F32, Generator* gen = nullptr);  // N(0,1)
Tensor from_buffer(const float* data, const Shape& shape);
Tensor from_buffer(const double* data, const Shape& shape);
Tensor from_vector(const std::vector<double>& values, const Shape& shape, DType dtype = DType::F32);
Tensor zeros_like(const Tensor& t);
Tensor empty_like(const Tensor& t);

// Fills, no autograd: for initialisers and optimisers.
void fill_(Tensor& t, double value);
void copy_(Tensor& dst, const Tensor& src);  // same numel; converts dtype (to bfloat16: nearest even)
// dst += alpha * src, no autograd (gradient accumulation, optimisers).
void add_inplace(Tensor& dst, const Tensor& src, double alpha = 1.0);

// The data of an optional operand (a bias, gamma, a residual): null where it is undefined.
template <class T> const T* data_or_null(const Tensor& t) { return t.defined() ? t.data<T>() : nullptr; }
template <class T> T* data_or_null(Tensor& t) { return t.defined() ? t.data<T>() : nullptr; }

// ---- template definitions ----
template <class T> T* Tensor::data() {
    check_defined("data");
    CNX_CHECK(impl_->storage, "tensor ", str(), " is a meta tensor (shape only): it has no data");
    CNX_CHECK(dtype_of<T>::value == impl_->dtype, "tensor ", str(), ": data<", dtype_name(dtype_of<T>::value),
              "> on a ", dtype_name(impl_->dtype), " tensor");
    return static_cast<T*>(impl_->storage->data) + impl_->offset;
}
template <class T> const T* Tensor::data() const { return const_cast<Tensor*>(this)->data<T>(); }

}  // namespace cnx

#include "viz/gradcam.h"

#include <algorithm>
#include <cmath>

#include "core/autograd.h"
#include "core/error.h"
#include "data/transforms.h"
#include "ops/softmax.h"

namespace cnx::viz {
namespace {

// Everything grad_cam changes on the model, put back however it ends.
struct ModelScope {
    nn::Module& model;
    bool was_training;
    std::vector<std::pair<Tensor, bool>> flags;
    nn::Module* hooked = nullptr;
    int hook = -1;
    explicit ModelScope(nn::Module& m) : model(m), was_training(m.is_training()) {
        model.eval();
        // Only the activation's gradient is wanted: the weights' would cost a GEMM per layer.
        for (auto& p : model.parameters()) flags.emplace_back(p, p.requires_grad()), p.requires_grad_(false);
    }
    ~ModelScope() {
        if (hooked) hooked->remove_forward_hook(hook);
        for (auto& [p, on] : flags) p.requires_grad_(on);
        model.train(was_training);
    }
};

}  // namespace

std::vector<std::string> grad_cam_layer_names(nn::Module& model) {
    std::vector<std::string> out;
    for (auto& [name, m] : model.named_modules())
        if (std::count(name.begin(), name.end(), '.') == 1 && !m->children().empty()) out.push_back(name);
    return out;
}

GradCamResult grad_cam(nn::Module& model, const Tensor& image, const GradCamOptions& options) {
    CNX_CHECK(image.dim() == 4 && image.size(0) == 1, "grad_cam: expected one NHWC image [1, H, W, C], got ",
              image.str());
    nn::Module* target = nullptr;
    for (auto& [name, m] : model.named_modules())
        if (name == options.target_layer && !name.empty()) target = m;
    if (!target) {
        std::string names;
        for (auto& n : grad_cam_layer_names(model)) names += (names.empty() ? "" : ", ") + n;
        fail("grad_cam: target layer '", options.target_layer, "' is not a module of the model (stages and blocks: ",
             names, ", and the blocks inside them, e.g. 'stages.2.0')");
    }

    ModelScope scope(model);
    Tensor activation;
    scope.hooked = target;
    scope.hook = target->register_forward_hook([&](nn::Module&, const Tensor&, const Tensor& out) {
        activation = out;
        if (out.requires_grad()) out.retain_grad();
    });
    Tensor x = image.clone();
    x.requires_grad_(true);
    struct GradMode {  // the caller may be in a NoGradGuard
        bool prev = autograd::grad_enabled();
        GradMode() { autograd::set_grad_enabled(true); }
        ~GradMode() { autograd::set_grad_enabled(prev); }
    } grad_mode;
    Tensor logits = model(x);
    CNX_CHECK(logits.dim() == 2 && logits.size(0) == 1, "grad_cam: the model returned ", logits.str(),
              "; expected logits [1, classes]");
    CNX_CHECK(activation.defined(), "grad_cam: target layer '", options.target_layer, "' did not run in the forward");
    CNX_CHECK(activation.dim() == 4 && activation.size(0) == 1, "grad_cam: target layer '", options.target_layer,
              "' outputs ", activation.str(), "; Grad-CAM needs a spatial NHWC activation [1, h, w, C]");

    GradCamResult r;
    r.layer = options.target_layer;
    const int64_t K = logits.size(1);
    {
        NoGradGuard ng;
        for (double p : softmax(logits.detach(), -1).to_vector()) r.probs.push_back((float)p);
    }
    r.target_class = options.target_class;
    if (r.target_class < 0) r.target_class = std::max_element(r.probs.begin(), r.probs.end()) - r.probs.begin();
    CNX_CHECK(r.target_class < K, "grad_cam: class ", r.target_class, " is out of range: the model has ", K,
              " classes");
    std::vector<double> onehot(K, 0.0);
    onehot[r.target_class] = 1.0;
    Tensor seed = from_vector(onehot, logits.shape(), logits.dtype());
    CNX_CHECK(activation.requires_grad(), "grad_cam: target layer '", options.target_layer,
              "' does not depend on the input");
    logits.backward(seed);
    Tensor grad = activation.grad();
    r.height = activation.size(1), r.width = activation.size(2);
    const int64_t C = activation.size(3), HW = r.height * r.width;
    std::vector<double> a = activation.detach().to_vector();
    std::vector<double> g = grad.defined() ? grad.to_vector() : std::vector<double>(a.size(), 0.0);
    std::vector<double> w(C, 0.0);
    for (int64_t i = 0; i < HW; ++i)
        for (int64_t c = 0; c < C; ++c) w[c] += g[i * C + c];
    for (double& v : w) v /= (double)HW;
    std::vector<double> cam(HW);
    for (int64_t i = 0; i < HW; ++i) {
        double s = 0;
        for (int64_t c = 0; c < C; ++c) s += w[c] * a[i * C + c];
        cam[i] = std::max(s, 0.0);
    }
    const double lo = *std::min_element(cam.begin(), cam.end());
    double hi = 0;
    for (double& v : cam) v -= lo, hi = std::max(hi, v);
    r.cam.resize(HW);
    for (int64_t i = 0; i < HW; ++i) r.cam[i] = (float)(cam[i] / (1e-7 + hi));
    return r;
}

Canvas gradcam_overlay(const Tensor& crop, const GradCamResult& r, float alpha) {
    CNX_CHECK(crop.dim() == 3 && (crop.size(2) == 1 || crop.size(2) == 3), "gradcam_overlay: expected a crop [H, W, 1 or 3], got ",
              crop.str());
    CNX_CHECK(r.height > 0 && r.width > 0 && (int64_t)r.cam.size() == r.height * r.width,
              "gradcam_overlay: the cam holds ", r.cam.size(), " cells for ", r.height, "x", r.width);
    CNX_CHECK(alpha >= 0 && alpha <= 1, "gradcam_overlay: alpha ", alpha, " outside [0, 1]");
    const int64_t H = crop.size(0), W = crop.size(1), C = crop.size(2);
    Tensor cam = from_buffer(r.cam.data(), {r.height, r.width, 1});
    Tensor up = data::resize(cam, H, W);  // bilinear, half-pixel centres
    const float* u = up.data<float>();
    Tensor img = crop.dtype() == DType::F32 ? crop : crop.to(DType::F32);
    const float* p = img.data<float>();
    std::vector<uint8_t> rgb((size_t)H * W * 3);
    for (int64_t i = 0; i < H * W; ++i) {
        // pytorch-grad-cam: applyColorMap(uint8(255 * cam)), so the heat is quantised to 256 steps.
        const Rgb heat = jet(std::floor(std::clamp(u[i], 0.0f, 1.0f) * 255.0f) / 255.0f);
        for (int k = 0; k < 3; ++k) {
            const float v = std::clamp(p[i * C + (C == 3 ? k : 0)], 0.0f, 1.0f);
            rgb[i * 3 + k] = (uint8_t)std::lround(std::clamp(alpha * heat[k] + (1 - alpha) * 255.0f * v, 0.0f, 255.0f));
        }
    }
    return Canvas((int)W, (int)H, std::move(rgb));
}

}  // namespace cnx::viz

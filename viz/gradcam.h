#pragma once
// Grad-CAM (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via
// Gradient-based Localization") from the framework's own autograd, computed as pytorch-grad-cam
// does: a forward hook keeps the target layer's activation A and retains its gradient
// (Tensor::retain_grad), backward runs from the target class's logit, and
//
//   w_c = mean over (y, x) of d logit / d A[y, x, c]
//   cam = ReLU(sum_c w_c A[:, :, c]),  then (cam - min) / (1e-7 + max(cam - min))
//
// Works on any nn::Module that maps NHWC images to logits [1, classes] and calls the target
// layer through Module::operator() (every registered model does).
//
//   auto r = viz::grad_cam(*model, image, {"stages.3"});   // image [1, H, W, C], normalised
//   viz::gradcam_overlay(crop, r).write_png("cam.png");    // crop [H, W, C] in [0, 1]
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "nn/module.h"
#include "viz/canvas.h"

namespace cnx::viz {

struct GradCamOptions {
    std::string target_layer = "stages.3";  // a module name: a stage, a block ("stages.2.1"), ...
    int64_t target_class = -1;              // -1: the top-1 class
};

struct GradCamResult {
    std::string layer;
    int64_t target_class = 0;
    std::vector<float> probs;      // softmax of the logits
    int64_t height = 0, width = 0;  // of the target layer's activation
    std::vector<float> cam;        // height x width, row-major, in [0, 1]
};

// The model is run in eval mode (its mode is restored), its parameters get no gradient, and the
// hook is removed afterwards, whatever happens. Errors name the layer: not a module of the model
// (with the names it has), not run by the forward, or not an NHWC activation.
GradCamResult grad_cam(nn::Module& model, const Tensor& image, const GradCamOptions& options = {});

// The names --target-layer suggests: modules one level below the root's lists (stages.0, ...).
std::vector<std::string> grad_cam_layer_names(nn::Module& model);

// The crop with the cam upsampled bilinearly (half-pixel centres, like cv2.resize) to its size,
// coloured with jet and blended: alpha * heatmap + (1 - alpha) * crop. crop: float [H, W, 1 or
// 3] in [0, 1] (grey is shown as grey).
Canvas gradcam_overlay(const Tensor& crop, const GradCamResult& result, float alpha = 0.5f);

}  // namespace cnx::viz

// tlx's own TensorFlow kernels, built at install (scripts/setup.mjs) for this machine's CPU
// against the TensorFlow wheel's headers into native/build/tlx_ops.so, and loaded into the
// process with TF_LoadLibrary (tlxOpsAvailable in src/tfjs/native-ops.ts).
//
// Why: tfjs runs an activation and its gradient as several elementwise ops, each a full pass
// over an activation-sized tensor (hard-swish forward: Add, Relu6, Mul, Mul; backward: Mul,
// Mul, Relu6Grad, Mul, Add). Keras's graph optimizer fuses some of these; eager execution
// cannot. Each activation kernel here is one pass, computed in the same order of float
// operations as the ops it replaces (built with -ffp-contract=off): hard-swish's results are
// equal to the last bit; swish's sigmoid is Eigen's, within a unit in the last place of
// TensorFlow's Sigmoid kernel. And TensorFlow's depthwise filter gradient is slow at 5x5.
#define EIGEN_USE_THREADS
#include <algorithm>
#include <functional>
#include <vector>

#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace {

using tensorflow::DEVICE_CPU;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using Flat = Eigen::TensorMap<Eigen::Tensor<float, 1, Eigen::RowMajor>, Eigen::Unaligned>;
using ConstFlat = Eigen::TensorMap<Eigen::Tensor<const float, 1, Eigen::RowMajor>, Eigen::Unaligned>;

// Runs `block(begin, end)` over [0, size) in blocks of 4096 values on TensorFlow's CPU threads;
// within a block, Eigen's vectorized expressions (so a value used twice is computed once).
void ForEachBlock(OpKernelContext* context, int64_t size, int64_t cost_per_value,
                  const std::function<void(int64_t, int64_t)>& block) {
  constexpr int64_t kBlock = 4096;
  const int64_t blocks = (size + kBlock - 1) / kBlock;
  context->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(
      blocks, kBlock * cost_per_value, [&](int64_t first, int64_t last) {
        for (int64_t b = first; b < last; ++b) block(b * kBlock, std::min(size, (b + 1) * kBlock));
      });
}

// An activation's forward kernel: y = f(x), elementwise.
class ActivationOp : public OpKernel {
 public:
  explicit ActivationOp(OpKernelConstruction* context) : OpKernel(context) {}
  void Compute(OpKernelContext* context) override {
    const Tensor& input = context->input(0);
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->forward_input_or_allocate_output({0}, 0, input.shape(), &output));
    Apply(context, input.flat<float>().data(), output->flat<float>().data(), input.NumElements());
  }

 protected:
  virtual void Apply(OpKernelContext* context, const float* x, float* y, int64_t size) = 0;
};

// An activation's gradient kernel: dx = f'(x) * dy, elementwise, from the upstream gradient and the input.
class ActivationGradOp : public OpKernel {
 public:
  explicit ActivationGradOp(OpKernelConstruction* context) : OpKernel(context) {}
  void Compute(OpKernelContext* context) override {
    const Tensor& gradient = context->input(0);
    const Tensor& features = context->input(1);
    OP_REQUIRES(context, gradient.shape() == features.shape(),
                tensorflow::errors::InvalidArgument(name(), ": gradient ", gradient.shape().DebugString(),
                                                    " and features ", features.shape().DebugString(), " differ"));
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->forward_input_or_allocate_output({0}, 0, features.shape(), &output));
    Apply(context, gradient.flat<float>().data(), features.flat<float>().data(), output->flat<float>().data(),
          features.NumElements());
  }

 protected:
  virtual void Apply(OpKernelContext* context, const float* dy, const float* x, float* dx, int64_t size) = 0;
};

// x * relu6(x + 3) / 6, as (x * relu6(x + 3)) * (1/6): tlx's hard-swish (Keras's hard_silu).
class HardSwishOp : public ActivationOp {
 public:
  using ActivationOp::ActivationOp;

 protected:
  void Apply(OpKernelContext* context, const float* in, float* out, int64_t size) override {
    ForEachBlock(context, size, 6, [&](int64_t begin, int64_t end) {
      ConstFlat x(in + begin, end - begin);
      Flat(out + begin, end - begin) = (x * (x + 3.0f).cwiseMax(0.0f).cwiseMin(6.0f)) * (1.0f / 6.0f);
    });
  }
};

// With g = dy * (1/6) and s = x + 3: g * relu6(s) + x * Relu6Grad(g, s), where Relu6Grad(g, s)
// is g where 0 < s < 6, else 0 (TensorFlow's kernel, so the clamp's edges are Keras's).
class HardSwishGradOp : public ActivationGradOp {
 public:
  using ActivationGradOp::ActivationGradOp;

 protected:
  void Apply(OpKernelContext* context, const float* dy_data, const float* x_data, float* out, int64_t size) override {
    ForEachBlock(context, size, 12, [&](int64_t begin, int64_t end) {
      // A plain loop: the compiler vectorizes the comparison as a mask (Eigen's bool tensors do not).
      for (int64_t i = begin; i < end; ++i) {
        const float x = x_data[i];
        const float g = dy_data[i] * (1.0f / 6.0f);
        const float s = x + 3.0f;
        const float clamped = std::min(std::max(s, 0.0f), 6.0f);
        out[i] = g * clamped + x * (g * (s > 0.0f && s < 6.0f ? 1.0f : 0.0f));
      }
    });
  }
};

// x * sigmoid(x) with Eigen's logistic function (TensorFlow's Sigmoid kernel).
class SwishOp : public ActivationOp {
 public:
  using ActivationOp::ActivationOp;

 protected:
  void Apply(OpKernelContext* context, const float* in, float* out, int64_t size) override {
    ForEachBlock(context, size, 30, [&](int64_t begin, int64_t end) {
      ConstFlat x(in + begin, end - begin);
      Flat(out + begin, end - begin) = x * x.sigmoid();
    });
  }
};

// With s = sigmoid(x): dy * s + SigmoidGrad(s, dy * x), SigmoidGrad(y, g) = g * y * (1 - y).
class SwishGradOp : public ActivationGradOp {
 public:
  using ActivationGradOp::ActivationGradOp;

 protected:
  void Apply(OpKernelContext* context, const float* dy_data, const float* x_data, float* out, int64_t size) override {
    ForEachBlock(context, size, 40, [&](int64_t begin, int64_t end) {
      const int64_t n = end - begin;
      ConstFlat dy(dy_data + begin, n);
      ConstFlat x(x_data + begin, n);
      float sigmoid_block[4096];  // s, computed once per value (the output may share dy's buffer)
      Flat s(sigmoid_block, n);
      s = x.sigmoid();
      Flat(out + begin, n) = dy * s + (dy * x) * s * (1.0f - s);
    });
  }
};

// Integer division rounding down and up, also for negative numerators (C++'s rounds toward zero).
int64_t FloorDiv(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
int64_t CeilDiv(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

// The gradient of a depthwise convolution (channel multiplier 1) with respect to its filter:
// dW[i, j, c] = sum over n, oh, ow of x[n, oh*sh + i - top, ow*sw + j - left, c] * dy[n, oh, ow, c].
// TensorFlow's DepthwiseConv2dNativeBackpropFilter runs at 4-8 GFLOP/s here (9 ms for a
// [32, 14, 14, 240] input and a 5x5 filter); this walks NHWC rows once, with the channels as
// the vectorized inner loop. Each image's sum is its own (in a fixed order), and the images'
// sums are added in order: the result does not depend on how the threads split the work.
class DepthwiseFilterGradOp : public OpKernel {
  static constexpr int64_t kLanes = 16;

 public:
  explicit DepthwiseFilterGradOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("kernel_size", &kernel_size_));
    OP_REQUIRES_OK(context, context->GetAttr("strides", &strides_));
    OP_REQUIRES_OK(context, context->GetAttr("pads", &pads_));
    OP_REQUIRES(context, kernel_size_.size() == 2 && strides_.size() == 2 && pads_.size() == 2,
                tensorflow::errors::InvalidArgument("TlxDepthwiseFilterGrad: kernel_size, strides and pads take 2 values"));
    OP_REQUIRES(context, kernel_size_[0] > 0 && kernel_size_[1] > 0 && strides_[0] > 0 && strides_[1] > 0,
                tensorflow::errors::InvalidArgument("TlxDepthwiseFilterGrad: kernel_size and strides must be positive"));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& input = context->input(0);
    const Tensor& gradient = context->input(1);
    OP_REQUIRES(context, input.dims() == 4 && gradient.dims() == 4,
                tensorflow::errors::InvalidArgument("TlxDepthwiseFilterGrad: input and out_backprop must be NHWC"));
    const int64_t batch = input.dim_size(0), height = input.dim_size(1), width = input.dim_size(2);
    const int64_t channels = input.dim_size(3);
    const int64_t out_height = gradient.dim_size(1), out_width = gradient.dim_size(2);
    OP_REQUIRES(context, gradient.dim_size(0) == batch && gradient.dim_size(3) == channels,
                tensorflow::errors::InvalidArgument("TlxDepthwiseFilterGrad: input ", input.shape().DebugString(),
                                                    " and out_backprop ", gradient.shape().DebugString(),
                                                    " differ in batch or channels"));
    const int64_t kh = kernel_size_[0], kw = kernel_size_[1];
    const int64_t sh = strides_[0], sw = strides_[1], top = pads_[0], left = pads_[1];
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, tensorflow::TensorShape({kh, kw, channels, 1}), &output));
    const int64_t taps = kh * kw * channels;
    const float* x = input.flat<float>().data();
    const float* dy = gradient.flat<float>().data();
    std::vector<float> per_image(static_cast<size_t>(batch * taps), 0.0f);
    auto sum_images = [&](int64_t first, int64_t last) {
      for (int64_t n = first; n < last; ++n) {
        float* acc = per_image.data() + n * taps;
        for (int64_t oh = 0; oh < out_height; ++oh) {
          const float* dy_row = dy + ((n * out_height + oh) * out_width) * channels;
          for (int64_t i = 0; i < kh; ++i) {
            const int64_t ih = oh * sh + i - top;
            if (ih < 0 || ih >= height) continue;
            const float* x_row = x + ((n * height + ih) * width) * channels;
            for (int64_t j = 0; j < kw; ++j) {
              // The output columns whose tap j falls inside the row: no bounds check in the loops below.
              const int64_t first_ow = std::max<int64_t>(0, CeilDiv(left - j, sw));
              const int64_t last_ow = std::min<int64_t>(out_width, FloorDiv(width - 1 + left - j, sw) + 1);
              float* __restrict a = acc + (i * kw + j) * channels;
              const float* x_first = x_row + (first_ow * sw + j - left) * channels;
              const float* dy_first = dy_row + first_ow * channels;
              const int64_t x_step = sw * channels;
              // Sixteen channels at a time, their sums held in registers across the columns.
              int64_t c0 = 0;
              for (; c0 + kLanes <= channels; c0 += kLanes) {
                float sums[kLanes];
                for (int64_t c = 0; c < kLanes; ++c) sums[c] = a[c0 + c];
                for (int64_t ow = first_ow; ow < last_ow; ++ow) {
                  const float* __restrict xv = x_first + (ow - first_ow) * x_step + c0;
                  const float* __restrict d = dy_first + (ow - first_ow) * channels + c0;
                  for (int64_t c = 0; c < kLanes; ++c) sums[c] += xv[c] * d[c];
                }
                for (int64_t c = 0; c < kLanes; ++c) a[c0 + c] = sums[c];
              }
              for (int64_t ow = first_ow; ow < last_ow; ++ow) {
                const float* __restrict xv = x_first + (ow - first_ow) * x_step;
                const float* __restrict d = dy_first + (ow - first_ow) * channels;
                for (int64_t c = c0; c < channels; ++c) a[c] += xv[c] * d[c];
              }
            }
          }
        }
      }
    };
    const int64_t cost = out_height * out_width * kh * kw * channels * 3;
    context->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(batch, cost, sum_images);
    float* result = output->flat<float>().data();
    std::fill(result, result + taps, 0.0f);
    for (int64_t n = 0; n < batch; ++n) {
      const float* acc = per_image.data() + n * taps;
      for (int64_t k = 0; k < taps; ++k) result[k] += acc[k];
    }
  }

 private:
  std::vector<tensorflow::int32> kernel_size_, strides_, pads_;
};

}  // namespace

REGISTER_OP("TlxDepthwiseFilterGrad")
    .Input("input: float")
    .Input("out_backprop: float")
    .Output("filter_backprop: float")
    .Attr("kernel_size: list(int)")
    .Attr("strides: list(int)")
    .Attr("pads: list(int)")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      std::vector<tensorflow::int32> kernel_size;
      TF_RETURN_IF_ERROR(c->GetAttr("kernel_size", &kernel_size));
      if (kernel_size.size() != 2) return tensorflow::errors::InvalidArgument("kernel_size takes 2 values");
      c->set_output(0, c->MakeShape({kernel_size[0], kernel_size[1], c->Dim(c->input(0), 3), 1}));
      return tensorflow::OkStatus();
    });
REGISTER_OP("TlxHardSwish").Input("x: float").Output("y: float").SetShapeFn(tensorflow::shape_inference::UnchangedShape);
REGISTER_OP("TlxHardSwishGrad")
    .Input("dy: float")
    .Input("x: float")
    .Output("dx: float")
    .SetShapeFn(tensorflow::shape_inference::UnchangedShape);
REGISTER_OP("TlxSwish").Input("x: float").Output("y: float").SetShapeFn(tensorflow::shape_inference::UnchangedShape);
REGISTER_OP("TlxSwishGrad")
    .Input("dy: float")
    .Input("x: float")
    .Output("dx: float")
    .SetShapeFn(tensorflow::shape_inference::UnchangedShape);

REGISTER_KERNEL_BUILDER(Name("TlxDepthwiseFilterGrad").Device(DEVICE_CPU), DepthwiseFilterGradOp);
REGISTER_KERNEL_BUILDER(Name("TlxHardSwish").Device(DEVICE_CPU), HardSwishOp);
REGISTER_KERNEL_BUILDER(Name("TlxHardSwishGrad").Device(DEVICE_CPU), HardSwishGradOp);
REGISTER_KERNEL_BUILDER(Name("TlxSwish").Device(DEVICE_CPU), SwishOp);
REGISTER_KERNEL_BUILDER(Name("TlxSwishGrad").Device(DEVICE_CPU), SwishGradOp);

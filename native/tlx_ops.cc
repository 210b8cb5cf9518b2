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
#include <cmath>
#include <functional>
#include <string>
#include <utility>
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

// Swish (SwishOp's values) and, from the same pass, each image's mean of it over the pixels
// per channel: the squeeze of EfficientNet's squeeze-excite, which reads the swish output right
// after. x [n, h, w, c] -> y like x, mean [n, c]. Sums in double: within float rounding of
// TensorFlow's Mean, not bit-equal (its float sum is a tree).
class SwishMeanOp : public OpKernel {
 public:
  explicit SwishMeanOp(OpKernelConstruction* context) : OpKernel(context) {}
  void Compute(OpKernelContext* context) override {
    const Tensor& input = context->input(0);
    OP_REQUIRES(context, input.dims() == 4,
                tensorflow::errors::InvalidArgument("TlxSwishMean: x has shape ", input.shape().DebugString(),
                                                    ", expected [images, height, width, channels]"));
    const int64_t images = input.dim_size(0), channels = input.dim_size(3);
    const int64_t pixels = input.dim_size(1) * input.dim_size(2);
    Tensor* output = nullptr;
    Tensor* mean = nullptr;
    OP_REQUIRES_OK(context, context->forward_input_or_allocate_output({0}, 0, input.shape(), &output));
    OP_REQUIRES_OK(context, context->allocate_output(1, tensorflow::TensorShape({images, channels}), &mean));
    const float* in = input.flat<float>().data();
    float* out = output->flat<float>().data();
    float* means = mean->flat<float>().data();
    if (channels == 0) return;
    // Blocks of whole pixels, about 4096 values: swished, then summed while still in cache.
    const int64_t block_pixels = std::max<int64_t>(1, 4096 / channels);
    context->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(
        images, pixels * channels * 32, [&](int64_t first, int64_t last) {
          std::vector<double> sums(channels);
          for (int64_t image = first; image < last; ++image) {
            std::fill(sums.begin(), sums.end(), 0.0);
            for (int64_t pixel = 0; pixel < pixels; pixel += block_pixels) {
              const int64_t begin = (image * pixels + pixel) * channels;
              const int64_t n = std::min(block_pixels, pixels - pixel) * channels;
              ConstFlat x(in + begin, n);
              Flat(out + begin, n) = x * x.sigmoid();
              for (int64_t i = 0; i < n; i += channels)
                for (int64_t c = 0; c < channels; ++c) sums[c] += out[begin + i + c];
            }
            for (int64_t c = 0; c < channels; ++c)
              means[image * channels + c] = pixels == 0 ? std::nanf("") : static_cast<float>(sums[c] / pixels);
          }
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


// One optimizer step over all of a phase's variables in one pass: Adam, RMSprop, SGD (with
// momentum or not), element by element in the float operations and order of tfjs's optimizers
// as src/train/flat-optimizer.ts runs them op by op (so the weights are equal to the last bit).
// Inputs: the flat slots (Adam: m, v; RMSprop: mean square, moments; momentum: accumulation),
// each variable's gradient, each variable, and the rule's hyperparameters as float32 values.
// Outputs: the new slots and the new variables. One op instead of a concat of the gradients,
// ~12 elementwise passes over all of them, a split and two ops per variable.
class ApplyFlatUpdateOp : public OpKernel {
 public:
  explicit ApplyFlatUpdateOp(OpKernelConstruction* context) : OpKernel(context) {
    std::string rule;
    OP_REQUIRES_OK(context, context->GetAttr("rule", &rule));
    OP_REQUIRES_OK(context, context->GetAttr("S", &slot_count_));
    OP_REQUIRES_OK(context, context->GetAttr("N", &variable_count_));
    const std::vector<std::pair<std::string, std::pair<int, int>>> rules = {
        // rule -> (slots, hyperparameters)
        {"adam", {2, 8}}, {"rmsprop", {2, 4}}, {"rmsprop_momentum", {2, 5}}, {"sgd", {0, 1}}, {"momentum", {1, 2}}};
    rule_ = -1;
    for (size_t k = 0; k < rules.size(); ++k)
      if (rules[k].first == rule) {
        rule_ = static_cast<int>(k);
        OP_REQUIRES(context, slot_count_ == rules[k].second.first,
                    tensorflow::errors::InvalidArgument("TlxApplyFlatUpdate: rule ", rule, " takes ",
                                                        rules[k].second.first, " slots, got ", slot_count_));
        hyper_count_ = rules[k].second.second;
      }
    OP_REQUIRES(context, rule_ >= 0, tensorflow::errors::InvalidArgument("TlxApplyFlatUpdate: unknown rule ", rule));
  }

  void Compute(OpKernelContext* context) override {
    const int S = slot_count_, N = variable_count_;
    std::vector<int64_t> offsets(N + 1, 0);
    for (int i = 0; i < N; ++i) {
      const Tensor& gradient = context->input(S + i);
      const Tensor& variable = context->input(S + N + i);
      OP_REQUIRES(context, gradient.shape() == variable.shape(),
                  tensorflow::errors::InvalidArgument("TlxApplyFlatUpdate: gradient ", i, " has shape ",
                                                      gradient.shape().DebugString(), ", its variable ",
                                                      variable.shape().DebugString()));
      offsets[i + 1] = offsets[i] + variable.NumElements();
    }
    const int64_t total = offsets[N];
    for (int k = 0; k < S; ++k)
      OP_REQUIRES(context, context->input(k).NumElements() == total,
                  tensorflow::errors::InvalidArgument("TlxApplyFlatUpdate: slot ", k, " has ",
                                                      context->input(k).NumElements(), " values, the variables ", total));
    const Tensor& hyper_tensor = context->input(S + 2 * N);
    OP_REQUIRES(context, hyper_tensor.NumElements() == hyper_count_,
                tensorflow::errors::InvalidArgument("TlxApplyFlatUpdate: ", hyper_count_, " hyperparameters expected, got ",
                                                    hyper_tensor.NumElements()));
    std::vector<const float*> slots_in(S), gradients(N), variables_in(N);
    std::vector<float*> slots_out(S), variables_out(N);
    for (int k = 0; k < S; ++k) {
      slots_in[k] = context->input(k).flat<float>().data();
      Tensor* out = nullptr;
      OP_REQUIRES_OK(context, context->allocate_output(k, tensorflow::TensorShape({total}), &out));
      slots_out[k] = out->flat<float>().data();
    }
    for (int i = 0; i < N; ++i) {
      gradients[i] = context->input(S + i).flat<float>().data();
      variables_in[i] = context->input(S + N + i).flat<float>().data();
      Tensor* out = nullptr;
      OP_REQUIRES_OK(context, context->allocate_output(S + i, context->input(S + N + i).shape(), &out));
      variables_out[i] = out->flat<float>().data();
    }
    const float* hyper = hyper_tensor.flat<float>().data();
    const std::vector<float> h(hyper, hyper + hyper_count_);
    // Block [begin, end) of the flat vector, variable by variable.
    ForEachBlock(context, total, 20, [&](int64_t begin, int64_t end) {
      int i = static_cast<int>(std::upper_bound(offsets.begin(), offsets.end(), begin) - offsets.begin()) - 1;
      for (int64_t at = begin; at < end; ++i) {
        const int64_t stop = std::min(end, offsets[i + 1]);
        const int64_t local = at - offsets[i], n = stop - at;
        Update(slots_in, slots_out, at, gradients[i] + local, variables_in[i] + local, variables_out[i] + local, n, h);
        at = stop;
      }
    });
  }

 private:
  // n values: the slots at flat offset `at`, the variable's at g, x, out.
  void Update(const std::vector<const float*>& slots_in, const std::vector<float*>& slots_out, int64_t at,
              const float* __restrict g, const float* __restrict x, float* __restrict out, int64_t n,
              const std::vector<float>& h) const {
    switch (rule_) {
      case 0: {  // adam: beta1, 1 - beta1, beta2, 1 - beta2, beta1^t, beta2^t, epsilon, -learning rate
        const float* __restrict m0 = slots_in[0] + at;
        const float* __restrict v0 = slots_in[1] + at;
        float* __restrict m1 = slots_out[0] + at;
        float* __restrict v1 = slots_out[1] + at;
        const float b1 = h[0], c1 = h[1], b2 = h[2], c2 = h[3], d1 = 1.0f - h[4], d2 = 1.0f - h[5], eps = h[6],
                    rate = h[7];
        for (int64_t k = 0; k < n; ++k) {
          const float m = m0[k] * b1 + g[k] * c1;
          const float v = v0[k] * b2 + (g[k] * g[k]) * c2;
          m1[k] = m;
          v1[k] = v;
          out[k] = ((m / d1) / (std::sqrt(v / d2) + eps)) * rate + x[k];
        }
        break;
      }
      case 1:    // rmsprop: decay, 1 - decay, learning rate, epsilon (momentum 0: the moments are the step)
      case 2: {  // rmsprop_momentum: ... and momentum
        const float* __restrict ms0 = slots_in[0] + at;
        const float* __restrict mo0 = slots_in[1] + at;
        float* __restrict ms1 = slots_out[0] + at;
        float* __restrict mo1 = slots_out[1] + at;
        const float decay = h[0], c = h[1], rate = h[2], eps = h[3];
        const float momentum = rule_ == 2 ? h[4] : 0.0f;
        for (int64_t k = 0; k < n; ++k) {
          const float ms = ms0[k] * decay + (g[k] * g[k]) * c;
          const float step = (g[k] * rate) / std::sqrt(ms + eps);
          const float moments = rule_ == 2 ? mo0[k] * momentum + step : step;
          ms1[k] = ms;
          mo1[k] = moments;
          out[k] = x[k] - moments;
        }
        break;
      }
      case 3: {  // sgd: -learning rate
        const float rate = h[0];
        for (int64_t k = 0; k < n; ++k) out[k] = rate * g[k] + x[k];
        break;
      }
      default: {  // momentum: -learning rate, momentum
        const float* __restrict a0 = slots_in[0] + at;
        float* __restrict a1 = slots_out[0] + at;
        const float rate = h[0], momentum = h[1];
        for (int64_t k = 0; k < n; ++k) {
          const float next = momentum * a0[k] + g[k];
          a1[k] = next;
          out[k] = rate * next + x[k];
        }
      }
    }
  }

  int slot_count_ = 0, variable_count_ = 0, hyper_count_ = 0, rule_ = -1;
};

// Whether each of the op's inputs first..first+count-1 is a vector of `channels` values (else the op fails, naming it).
bool ChannelVectors(OpKernelContext* context, int first, int count, int64_t channels) {
  for (int k = first; k < first + count; ++k) {
    const Tensor& input = context->input(k);
    if (input.dims() == 1 && input.dim_size(0) == channels) continue;
    context->SetStatus(tensorflow::errors::InvalidArgument(context->op_kernel().type_string(), ": input ", k, " has shape ",
                                                           input.shape().DebugString(), ", expected [", channels, "]"));
    return false;
  }
  return true;
}

// BatchNorm (inference mode) folded into its conv's filter: with scale = gamma * inverse_std,
// filter = kernel * scale (per output channel: the kernel's last axis, or for a depthwise
// kernel [h, w, channels, 1] its third, which flattened is the same: the channel is the flat
// index modulo the channel count), bias = beta - mean * scale. The float operations of
// src/engine/taped-conv-bn.ts's foldConvBn in its order: its results to the last bit, in one op
// instead of five (plus a reshape) per conv and step.
class FoldConvBnOp : public OpKernel {
 public:
  explicit FoldConvBnOp(OpKernelConstruction* context) : OpKernel(context) {}
  void Compute(OpKernelContext* context) override {
    const Tensor& kernel = context->input(0);
    const int64_t channels = context->input(1).NumElements();
    if (!ChannelVectors(context, 1, 4, channels)) return;
    OP_REQUIRES(context, kernel.dims() >= 1 && channels > 0 && kernel.NumElements() % channels == 0,
                tensorflow::errors::InvalidArgument("TlxFoldConvBn: kernel ", kernel.shape().DebugString(),
                                                    " is not a multiple of ", channels, " channels"));
    const float* gamma = context->input(1).flat<float>().data();
    const float* beta = context->input(2).flat<float>().data();
    const float* inverse_std = context->input(3).flat<float>().data();
    const float* mean = context->input(4).flat<float>().data();
    Tensor *filter = nullptr, *bias = nullptr, *scale = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, kernel.shape(), &filter));
    OP_REQUIRES_OK(context, context->allocate_output(1, tensorflow::TensorShape({channels}), &bias));
    OP_REQUIRES_OK(context, context->allocate_output(2, tensorflow::TensorShape({channels}), &scale));
    float* s = scale->flat<float>().data();
    float* b = bias->flat<float>().data();
    for (int64_t c = 0; c < channels; ++c) {
      s[c] = gamma[c] * inverse_std[c];
      b[c] = beta[c] - mean[c] * s[c];
    }
    const float* __restrict k = kernel.flat<float>().data();
    float* __restrict f = filter->flat<float>().data();
    const int64_t rows = kernel.NumElements() / channels;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < channels; ++c) f[r * channels + c] = k[r * channels + c] * s[c];
  }
};

// The fold's gradient, from the folded filter's and bias's: d_kernel = d_filter * scale, and
// d_gamma = (sum over the kernel's other axes of d_filter * kernel - d_bias * mean) * inverse_std
// (beta's gradient is the bias's). The sums are per channel in double, then rounded once:
// at least as exact as TensorFlow's Sum, which the op-by-op fold runs (so they agree to
// float rounding, not to the bit).
class UnfoldConvBnGradOp : public OpKernel {
 public:
  explicit UnfoldConvBnGradOp(OpKernelConstruction* context) : OpKernel(context) {}
  void Compute(OpKernelContext* context) override {
    const Tensor& filter_gradient = context->input(0);
    const Tensor& kernel = context->input(2);
    const int64_t channels = context->input(1).NumElements();
    if (!ChannelVectors(context, 1, 1, channels) || !ChannelVectors(context, 3, 3, channels)) return;
    OP_REQUIRES(context, channels > 0 && filter_gradient.shape() == kernel.shape() && kernel.NumElements() % channels == 0,
                tensorflow::errors::InvalidArgument("TlxUnfoldConvBnGrad: filter gradient ",
                                                    filter_gradient.shape().DebugString(), ", kernel ",
                                                    kernel.shape().DebugString(), ", ", channels, " channels"));
    const float* bias_gradient = context->input(1).flat<float>().data();
    const float* scale = context->input(3).flat<float>().data();
    const float* inverse_std = context->input(4).flat<float>().data();
    const float* mean = context->input(5).flat<float>().data();
    Tensor *kernel_gradient = nullptr, *gamma_gradient = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, kernel.shape(), &kernel_gradient));
    OP_REQUIRES_OK(context, context->allocate_output(1, tensorflow::TensorShape({channels}), &gamma_gradient));
    const float* __restrict df = filter_gradient.flat<float>().data();
    const float* __restrict k = kernel.flat<float>().data();
    float* __restrict dk = kernel_gradient->flat<float>().data();
    std::vector<double> sums(static_cast<size_t>(channels), 0.0);
    double* __restrict acc = sums.data();
    const int64_t rows = kernel.NumElements() / channels;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < channels; ++c) {
        const int64_t at = r * channels + c;
        dk[at] = df[at] * scale[c];
        acc[c] += static_cast<double>(df[at] * k[at]);
      }
    float* dg = gamma_gradient->flat<float>().data();
    for (int64_t c = 0; c < channels; ++c)
      dg[c] = (static_cast<float>(acc[c]) - bias_gradient[c] * mean[c]) * inverse_std[c];
  }
};

// Checks an activation [batch, height, width, channels] against a per-image, per-channel gate
// [batch, 1, 1, channels] (squeeze-excite's), failing the op with both shapes otherwise.
bool GateFits(OpKernelContext* context, const Tensor& x, const Tensor& gate) {
  if (x.dims() == 4 && gate.dims() == 4 && gate.dim_size(0) == x.dim_size(0) && gate.dim_size(1) == 1 &&
      gate.dim_size(2) == 1 && gate.dim_size(3) == x.dim_size(3))
    return true;
  context->SetStatus(tensorflow::errors::InvalidArgument(context->op_kernel().type_string(), ": activation ",
                                                         x.shape().DebugString(), " and gate ", gate.shape().DebugString(),
                                                         " are not [b, h, w, c] and [b, 1, 1, c]"));
  return false;
}

// y[b, h, w, c] = x[b, h, w, c] * gate[b, c] over an activation [batch, pixels, channels].
void ScaleByGate(OpKernelContext* context, const float* in, const float* gate, float* out, int64_t batch,
                 int64_t pixels, int64_t channels) {
  // Rows of pixels: image b's pixel p is row b * pixels + p.
  context->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(
      batch * pixels, channels, [&](int64_t first, int64_t last) {
        for (int64_t row = first; row < last; ++row) {
          const float* __restrict gb = gate + (row / pixels) * channels;
          const float* __restrict xr = in + row * channels;
          float* __restrict yr = out + row * channels;
          for (int64_t c = 0; c < channels; ++c) yr[c] = xr[c] * gb[c];
        }
      });
}

// Squeeze-excite's product: y[b, h, w, c] = x[b, h, w, c] * gate[b, c], the float product of
// TensorFlow's broadcasting Mul (bit-equal), without its generic broadcast (2.6 ns a value).
class ScaleChannelsOp : public OpKernel {
 public:
  explicit ScaleChannelsOp(OpKernelConstruction* context) : OpKernel(context) {}
  void Compute(OpKernelContext* context) override {
    const Tensor& x = context->input(0);
    const Tensor& gate = context->input(1);
    if (!GateFits(context, x, gate)) return;
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, x.shape(), &output));
    ScaleByGate(context, x.flat<float>().data(), gate.flat<float>().data(), output->flat<float>().data(),
                x.dim_size(0), x.dim_size(1) * x.dim_size(2), x.dim_size(3));
  }
};

// A whole squeeze-excite after its pooling, off the tape: from each image's channel means
// pooled [b, c], the reduce conv (kernel [c, k] as [1, 1, c, k], bias [k], then linear, ReLU or
// swish), the expand conv (kernel [k, c], bias [c], then sigmoid or hard-sigmoid) and the
// product x * gate. On [b, 1, 1, c] those convs are a few microseconds of arithmetic each, and
// as tfjs runs them (reshapes, _FusedMatMul, the activations' ops, the product) a dozen ops per
// block. Each product sums in channel order and adds the bias after (as MatMul + BiasAdd, within
// float rounding of them); sigmoid is 1 / (1 + exp(-z)), hard-sigmoid relu6(z + 3) * (1/6) as
// Keras's MobileNetV3 computes it.
class SqueezeExciteOp : public OpKernel {
  enum class Reduce { kLinear, kRelu, kSwish };

 public:
  explicit SqueezeExciteOp(OpKernelConstruction* context) : OpKernel(context) {
    std::string reduce, gate;
    OP_REQUIRES_OK(context, context->GetAttr("reduce_activation", &reduce));
    OP_REQUIRES_OK(context, context->GetAttr("gate_activation", &gate));
    OP_REQUIRES(context, reduce == "Linear" || reduce == "Relu" || reduce == "Swish",
                tensorflow::errors::InvalidArgument("TlxSqueezeExcite: reduce_activation ", reduce,
                                                    ", expected Linear, Relu or Swish"));
    OP_REQUIRES(context, gate == "Sigmoid" || gate == "HardSigmoid",
                tensorflow::errors::InvalidArgument("TlxSqueezeExcite: gate_activation ", gate,
                                                    ", expected Sigmoid or HardSigmoid"));
    reduce_ = reduce == "Relu" ? Reduce::kRelu : reduce == "Swish" ? Reduce::kSwish : Reduce::kLinear;
    hard_gate_ = gate == "HardSigmoid";
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& x = context->input(0);
    const Tensor& pooled = context->input(1);
    const Tensor& reduce_kernel = context->input(2);
    const Tensor& reduce_bias = context->input(3);
    const Tensor& expand_kernel = context->input(4);
    const Tensor& expand_bias = context->input(5);
    OP_REQUIRES(context, x.dims() == 4 && reduce_bias.dims() == 1,
                tensorflow::errors::InvalidArgument("TlxSqueezeExcite: x ", x.shape().DebugString(),
                                                    " is not [b, h, w, c] or reduce bias ",
                                                    reduce_bias.shape().DebugString(), " not a vector"));
    const int64_t batch = x.dim_size(0), pixels = x.dim_size(1) * x.dim_size(2), channels = x.dim_size(3);
    const int64_t reduced = reduce_bias.dim_size(0);
    OP_REQUIRES(context,
                pooled.NumElements() == batch * channels && reduce_kernel.NumElements() == channels * reduced &&
                    expand_kernel.NumElements() == reduced * channels && expand_bias.NumElements() == channels,
                tensorflow::errors::InvalidArgument(
                    "TlxSqueezeExcite: x ", x.shape().DebugString(), ", pooled ", pooled.shape().DebugString(),
                    ", reduce kernel ", reduce_kernel.shape().DebugString(), " and bias ",
                    reduce_bias.shape().DebugString(), ", expand kernel ", expand_kernel.shape().DebugString(),
                    " and bias ", expand_bias.shape().DebugString(), " do not chain [b, c] -> [b, k] -> [b, c]"));
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, x.shape(), &output));
    const float* means = pooled.flat<float>().data();
    const float* w1 = reduce_kernel.flat<float>().data();
    const float* b1 = reduce_bias.flat<float>().data();
    const float* w2 = expand_kernel.flat<float>().data();
    const float* b2 = expand_bias.flat<float>().data();
    std::vector<float> gates(static_cast<size_t>(batch * channels));
    context->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(
        batch, channels * reduced * 4, [&](int64_t first, int64_t last) {
          std::vector<float> hidden(reduced);
          for (int64_t b = first; b < last; ++b) {
            float* __restrict h = hidden.data();
            std::fill(h, h + reduced, 0.0f);
            for (int64_t c = 0; c < channels; ++c) {
              const float m = means[b * channels + c];
              const float* __restrict row = w1 + c * reduced;
              for (int64_t k = 0; k < reduced; ++k) h[k] += m * row[k];
            }
            for (int64_t k = 0; k < reduced; ++k) {
              const float z = h[k] + b1[k];
              h[k] = reduce_ == Reduce::kRelu    ? std::max(z, 0.0f)
                     : reduce_ == Reduce::kSwish ? z * (1.0f / (1.0f + std::exp(-z)))
                                                 : z;
            }
            float* __restrict g = gates.data() + b * channels;
            std::fill(g, g + channels, 0.0f);
            for (int64_t k = 0; k < reduced; ++k) {
              const float v = h[k];
              const float* __restrict row = w2 + k * channels;
              for (int64_t c = 0; c < channels; ++c) g[c] += v * row[c];
            }
            for (int64_t c = 0; c < channels; ++c) {
              const float z = g[c] + b2[c];
              g[c] = hard_gate_ ? std::min(std::max(z + 3.0f, 0.0f), 6.0f) * (1.0f / 6.0f)
                                : 1.0f / (1.0f + std::exp(-z));
            }
          }
        });
    ScaleByGate(context, x.flat<float>().data(), gates.data(), output->flat<float>().data(), batch, pixels,
                channels);
  }

 private:
  Reduce reduce_ = Reduce::kLinear;
  bool hard_gate_ = false;
};

// Its gradient in one pass over the activation: dx = dy * gate (bit-equal to the Mul), and
// d_gate[b, c] = sum over the pixels of dy * x, summed in double per image and channel, then
// rounded once (TensorFlow's Mul then Sum, within float rounding).
class ScaleChannelsGradOp : public OpKernel {
 public:
  explicit ScaleChannelsGradOp(OpKernelConstruction* context) : OpKernel(context) {}
  void Compute(OpKernelContext* context) override {
    const Tensor& dy = context->input(0);
    const Tensor& x = context->input(1);
    const Tensor& gate = context->input(2);
    if (!GateFits(context, x, gate)) return;
    OP_REQUIRES(context, dy.shape() == x.shape(),
                tensorflow::errors::InvalidArgument("TlxScaleChannelsGrad: gradient ", dy.shape().DebugString(),
                                                    " and activation ", x.shape().DebugString(), " differ"));
    Tensor *dx = nullptr, *dgate = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, x.shape(), &dx));
    OP_REQUIRES_OK(context, context->allocate_output(1, gate.shape(), &dgate));
    const int64_t batch = x.dim_size(0), pixels = x.dim_size(1) * x.dim_size(2), channels = x.dim_size(3);
    const float* d = dy.flat<float>().data();
    const float* in = x.flat<float>().data();
    const float* g = gate.flat<float>().data();
    float* out = dx->flat<float>().data();
    float* dg = dgate->flat<float>().data();
    context->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(
        batch, pixels * channels * 3, [&](int64_t first, int64_t last) {
          std::vector<double> sums(static_cast<size_t>(channels));
          for (int64_t b = first; b < last; ++b) {
            std::fill(sums.begin(), sums.end(), 0.0);
            double* __restrict acc = sums.data();
            const float* __restrict gb = g + b * channels;
            for (int64_t p = 0; p < pixels; ++p) {
              const int64_t at = (b * pixels + p) * channels;
              const float* __restrict dr = d + at;
              const float* __restrict xr = in + at;
              float* __restrict outr = out + at;
              for (int64_t c = 0; c < channels; ++c) {
                outr[c] = dr[c] * gb[c];
                acc[c] += static_cast<double>(dr[c] * xr[c]);
              }
            }
            for (int64_t c = 0; c < channels; ++c) dg[b * channels + c] = static_cast<float>(acc[c]);
          }
        });
  }
};

// A per-channel affine map of the last axis, ((x - shift[c]) / divisor[c]) * factor[c]: Keras's
// An image batch's preprocessing in one pass: y = ((x * scale + offset - shift) / divisor) * factor,
// per channel, in that order of float operations. With ones and zeros where a layer is absent it
// is bit-equal to the layers it replaces (x * 1, x + 0, x - 0, x / 1 are x): Rescaling (tfjs's
// Mul then Add), Normalization (Sub, RealDiv), a per-channel Rescaling (Mul), or all three in a
// row as EfficientNet's stem has them; one pass instead of their generic broadcasts (RealDiv:
// 12.5 ms over a 32x224x224x3 batch).
class ChannelAffineOp : public OpKernel {
 public:
  explicit ChannelAffineOp(OpKernelConstruction* context) : OpKernel(context) {}
  void Compute(OpKernelContext* context) override {
    const Tensor& x = context->input(0);
    OP_REQUIRES(context, x.dims() >= 1, tensorflow::errors::InvalidArgument("TlxChannelAffine: x is a scalar"));
    const int64_t channels = x.dim_size(x.dims() - 1);
    if (!ChannelVectors(context, 1, 5, channels)) return;
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, x.shape(), &output));
    const float* in = x.flat<float>().data();
    float* out = output->flat<float>().data();
    const int64_t size = x.NumElements();
    if (channels == 0 || size == 0) return;
    // The terms repeated over a span of whole pixels at least 64 values long, so the inner loop
    // runs over contiguous arrays and vectorizes (3 channels alone would not).
    const int64_t span = channels * std::max<int64_t>(1, 64 / channels);
    std::vector<float> terms[5];
    for (int k = 0; k < 5; ++k) {
      const float* vector = context->input(k + 1).flat<float>().data();
      terms[k].resize(span);
      for (int64_t j = 0; j < span; ++j) terms[k][j] = vector[j % channels];
    }
    const float *scale = terms[0].data(), *offset = terms[1].data(), *shift = terms[2].data(),
                *divisor = terms[3].data(), *factor = terms[4].data();
    const int64_t spans = (size + span - 1) / span;
    context->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(
        spans, span * 8, [&](int64_t first, int64_t last) {
          for (int64_t block = first; block < last; ++block) {
            const float* x_span = in + block * span;
            float* y_span = out + block * span;
            const int64_t length = std::min(span, size - block * span);  // the last span: whole pixels too
            for (int64_t j = 0; j < length; ++j)
              y_span[j] = (((x_span[j] * scale[j] + offset[j]) - shift[j]) / divisor[j]) * factor[j];
          }
        });
  }
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
REGISTER_OP("TlxApplyFlatUpdate")
    .Input("slots: S * float")
    .Input("gradients: N * float")
    .Input("variables: N * float")
    .Input("hyperparameters: float")
    .Output("new_slots: S * float")
    .Output("new_variables: N * float")
    .Attr("rule: string")
    .Attr("S: int >= 0")
    .Attr("N: int >= 1")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      int slots = 0, variables = 0;
      TF_RETURN_IF_ERROR(c->GetAttr("S", &slots));
      TF_RETURN_IF_ERROR(c->GetAttr("N", &variables));
      for (int k = 0; k < slots; ++k) c->set_output(k, c->input(k));
      for (int i = 0; i < variables; ++i) c->set_output(slots + i, c->input(slots + variables + i));
      return tensorflow::OkStatus();
    });
REGISTER_OP("TlxFoldConvBn")
    .Input("kernel: float")
    .Input("gamma: float")
    .Input("beta: float")
    .Input("inverse_std: float")
    .Input("mean: float")
    .Output("filter: float")
    .Output("bias: float")
    .Output("scale: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(1));
      c->set_output(2, c->input(1));
      return tensorflow::OkStatus();
    });
REGISTER_OP("TlxUnfoldConvBnGrad")
    .Input("filter_gradient: float")
    .Input("bias_gradient: float")
    .Input("kernel: float")
    .Input("scale: float")
    .Input("inverse_std: float")
    .Input("mean: float")
    .Output("kernel_gradient: float")
    .Output("gamma_gradient: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(2));
      c->set_output(1, c->input(1));
      return tensorflow::OkStatus();
    });
REGISTER_OP("TlxScaleChannels")
    .Input("x: float")
    .Input("gate: float")
    .Output("y: float")
    .SetShapeFn(tensorflow::shape_inference::UnchangedShape);
REGISTER_OP("TlxSqueezeExcite")
    .Input("x: float")
    .Input("pooled: float")
    .Input("reduce_kernel: float")
    .Input("reduce_bias: float")
    .Input("expand_kernel: float")
    .Input("expand_bias: float")
    .Output("y: float")
    .Attr("reduce_activation: string")
    .Attr("gate_activation: string")
    .SetShapeFn(tensorflow::shape_inference::UnchangedShape);
REGISTER_OP("TlxScaleChannelsGrad")
    .Input("dy: float")
    .Input("x: float")
    .Input("gate: float")
    .Output("dx: float")
    .Output("dgate: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(1));
      c->set_output(1, c->input(2));
      return tensorflow::OkStatus();
    });
REGISTER_OP("TlxChannelAffine")
    .Input("x: float")
    .Input("scale: float")
    .Input("offset: float")
    .Input("shift: float")
    .Input("divisor: float")
    .Input("factor: float")
    .Output("y: float")
    .SetShapeFn(tensorflow::shape_inference::UnchangedShape);
REGISTER_OP("TlxHardSwish").Input("x: float").Output("y: float").SetShapeFn(tensorflow::shape_inference::UnchangedShape);
REGISTER_OP("TlxHardSwishGrad")
    .Input("dy: float")
    .Input("x: float")
    .Output("dx: float")
    .SetShapeFn(tensorflow::shape_inference::UnchangedShape);
REGISTER_OP("TlxSwish").Input("x: float").Output("y: float").SetShapeFn(tensorflow::shape_inference::UnchangedShape);
REGISTER_OP("TlxSwishMean")
    .Input("x: float")
    .Output("y: float")
    .Output("mean: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      tensorflow::shape_inference::ShapeHandle x;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &x));
      c->set_output(0, x);
      c->set_output(1, c->Matrix(c->Dim(x, 0), c->Dim(x, 3)));
      return tensorflow::OkStatus();
    });
REGISTER_OP("TlxSwishGrad")
    .Input("dy: float")
    .Input("x: float")
    .Output("dx: float")
    .SetShapeFn(tensorflow::shape_inference::UnchangedShape);

REGISTER_KERNEL_BUILDER(Name("TlxDepthwiseFilterGrad").Device(DEVICE_CPU), DepthwiseFilterGradOp);
REGISTER_KERNEL_BUILDER(Name("TlxApplyFlatUpdate").Device(DEVICE_CPU), ApplyFlatUpdateOp);
REGISTER_KERNEL_BUILDER(Name("TlxFoldConvBn").Device(DEVICE_CPU), FoldConvBnOp);
REGISTER_KERNEL_BUILDER(Name("TlxUnfoldConvBnGrad").Device(DEVICE_CPU), UnfoldConvBnGradOp);
REGISTER_KERNEL_BUILDER(Name("TlxScaleChannels").Device(DEVICE_CPU), ScaleChannelsOp);
REGISTER_KERNEL_BUILDER(Name("TlxSqueezeExcite").Device(DEVICE_CPU), SqueezeExciteOp);
REGISTER_KERNEL_BUILDER(Name("TlxScaleChannelsGrad").Device(DEVICE_CPU), ScaleChannelsGradOp);
REGISTER_KERNEL_BUILDER(Name("TlxChannelAffine").Device(DEVICE_CPU), ChannelAffineOp);
REGISTER_KERNEL_BUILDER(Name("TlxHardSwish").Device(DEVICE_CPU), HardSwishOp);
REGISTER_KERNEL_BUILDER(Name("TlxHardSwishGrad").Device(DEVICE_CPU), HardSwishGradOp);
REGISTER_KERNEL_BUILDER(Name("TlxSwish").Device(DEVICE_CPU), SwishOp);
REGISTER_KERNEL_BUILDER(Name("TlxSwishGrad").Device(DEVICE_CPU), SwishGradOp);
REGISTER_KERNEL_BUILDER(Name("TlxSwishMean").Device(DEVICE_CPU), SwishMeanOp);

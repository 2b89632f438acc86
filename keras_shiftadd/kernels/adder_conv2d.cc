// Adder convolution (negative L1 distance) kernels for TensorFlow on CPU.
//
// Two operations:
//
//   KerasShiftaddAdderConv2D:
//                          Y[b, i, j, f] = -sum_{u, v, c} |X[b, i*sh + u - pt,
//                                          j*sw + v - pl, c] - W[u, v, c, f]|
//   KerasShiftaddAdderConv2DInputGrad:
//                          dX = sum over windows and filters of
//                          dY[b, i, j, f] * clip(W[u, v, c, f] - X[...], -1, 1)
//
// with the zero padding of TensorFlow's "SAME" and "VALID" (padded zeros count
// in the distance). The input gradient is AdderNet's HardTanh gradient. The
// kernel gradient, sum dY * (X - W), is a convolution backprop-filter minus
// W times the summed dY, so the Python side computes it with TensorFlow's own
// operations.
//
// Neither operation materializes the patch matrix: each worker gathers the
// windows of a small block of output positions into a buffer of its own (a
// few tens of KiB) and runs a register-blocked SIMD loop over it. The vector
// width follows the compiler target (the build uses -march=native): 16 floats
// with AVX-512, 8 with AVX, 4 otherwise.

#include <algorithm>
#include <array>
#include <cstdint>
#include <functional>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace keras_shiftadd {
namespace {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::errors::InvalidArgument;

#if defined(__AVX512F__)
constexpr int kLanes = 16;
// Register tiles: rows x vectors accumulators. AVX-512 has 32 vector
// registers, AVX and SSE have 16.
constexpr int kForwardRows = 4;
constexpr int kForwardVectors = 4;
constexpr int kGradRows = 4;
constexpr int kGradVectors = 2;
#elif defined(__AVX__)
constexpr int kLanes = 8;
constexpr int kForwardRows = 4;
constexpr int kForwardVectors = 2;
constexpr int kGradRows = 2;
constexpr int kGradVectors = 2;
#else
constexpr int kLanes = 4;
constexpr int kForwardRows = 4;
constexpr int kForwardVectors = 2;
constexpr int kGradRows = 2;
constexpr int kGradVectors = 2;
#endif

// Output positions gathered per block. 64 rows of a 3x3x32 window take
// 72 KiB, which stays in the L2 cache next to the kernel.
constexpr int64_t kBlockRows = 64;

typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t IVec __attribute__((vector_size(kLanes * sizeof(float))));
// Unaligned, aliasing view of memory as a vector.
typedef float UVec
    __attribute__((vector_size(kLanes * sizeof(float)), aligned(4), may_alias));

inline Vec Load(const float* p) { return *reinterpret_cast<const UVec*>(p); }
inline void Store(float* p, Vec v) { *reinterpret_cast<UVec*>(p) = v; }
inline Vec Broadcast(float s) { return Vec{} + s; }
inline Vec Abs(Vec v) { return (Vec)((IVec)v & 0x7fffffff); }

int64_t RoundUp(int64_t value, int64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

// Sizes of one adder convolution, with TensorFlow's padding rules.
struct Geometry {
  int64_t batch, height, width, channels;
  int64_t kernel_height, kernel_width, filters;
  int64_t stride_height, stride_width;
  int64_t out_height, out_width, pad_top, pad_left;

  int64_t depth() const { return kernel_height * kernel_width * channels; }
  int64_t positions() const { return out_height * out_width; }
};

int64_t OutputLength(int64_t length, int64_t kernel, int64_t stride,
                     bool same) {
  if (same) return (length + stride - 1) / stride;
  return length >= kernel ? (length - kernel) / stride + 1 : 0;
}

int64_t PadBefore(int64_t length, int64_t out, int64_t kernel, int64_t stride,
                  bool same) {
  if (!same) return 0;
  const int64_t total = std::max<int64_t>((out - 1) * stride + kernel - length,
                                          0);
  return total / 2;
}

Geometry MakeGeometry(const Tensor& input, const Tensor& kernel,
                      const std::vector<int32_t>& strides, bool same) {
  Geometry g;
  g.batch = input.dim_size(0);
  g.height = input.dim_size(1);
  g.width = input.dim_size(2);
  g.channels = input.dim_size(3);
  g.kernel_height = kernel.dim_size(0);
  g.kernel_width = kernel.dim_size(1);
  g.filters = kernel.dim_size(3);
  g.stride_height = strides[0];
  g.stride_width = strides[1];
  g.out_height = OutputLength(g.height, g.kernel_height, g.stride_height, same);
  g.out_width = OutputLength(g.width, g.kernel_width, g.stride_width, same);
  g.pad_top = PadBefore(g.height, g.out_height, g.kernel_height,
                        g.stride_height, same);
  g.pad_left = PadBefore(g.width, g.out_width, g.kernel_width, g.stride_width,
                         same);
  return g;
}

// Copies the windows of `rows` output positions of image `image`, starting at
// position `first`, into `patches` (rows x stride floats, (u, v, c) order,
// zeros for padding and for the columns past the depth).
void GatherWindows(const Geometry& g, const float* image, int64_t first,
                   int64_t rows, float* patches, int64_t stride) {
  const int64_t channels = g.channels;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t position = first + r;
    const int64_t i = position / g.out_width;
    const int64_t j = position % g.out_width;
    float* row = patches + r * stride;
    for (int64_t u = 0; u < g.kernel_height; ++u) {
      const int64_t y = i * g.stride_height + u - g.pad_top;
      for (int64_t v = 0; v < g.kernel_width; ++v) {
        const int64_t x = j * g.stride_width + v - g.pad_left;
        float* target = row + (u * g.kernel_width + v) * channels;
        if (y < 0 || y >= g.height || x < 0 || x >= g.width) {
          std::memset(target, 0, channels * sizeof(float));
        } else {
          std::memcpy(target, image + (y * g.width + x) * channels,
                      channels * sizeof(float));
        }
      }
    }
    std::fill(row + g.depth(), row + stride, 0.0f);
  }
}

// Adds the window gradients of `rows` positions back onto the input gradient
// of one image: the transpose of GatherWindows.
void ScatterWindows(const Geometry& g, const float* patches, int64_t stride,
                    int64_t first, int64_t rows, float* image) {
  const int64_t channels = g.channels;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t position = first + r;
    const int64_t i = position / g.out_width;
    const int64_t j = position % g.out_width;
    const float* row = patches + r * stride;
    for (int64_t u = 0; u < g.kernel_height; ++u) {
      const int64_t y = i * g.stride_height + u - g.pad_top;
      if (y < 0 || y >= g.height) continue;
      for (int64_t v = 0; v < g.kernel_width; ++v) {
        const int64_t x = j * g.stride_width + v - g.pad_left;
        if (x < 0 || x >= g.width) continue;
        const float* source = row + (u * g.kernel_width + v) * channels;
        float* target = image + (y * g.width + x) * channels;
        for (int64_t c = 0; c < channels; ++c) target[c] += source[c];
      }
    }
  }
}

// out[r, f] = -sum_d |patches[r, d] - kernel[d, f]| for R rows and NV
// vectors of filters.
template <int R, int NV>
void DistanceTile(const float* patches, int64_t patch_stride,
                  const float* kernel, int64_t kernel_stride, int64_t depth,
                  float* out, int64_t out_stride) {
  Vec acc[R][NV] = {};
  for (int64_t d = 0; d < depth; ++d) {
    Vec w[NV];
    for (int v = 0; v < NV; ++v) w[v] = Load(kernel + d * kernel_stride + v * kLanes);
    for (int r = 0; r < R; ++r) {
      const Vec x = Broadcast(patches[r * patch_stride + d]);
      for (int v = 0; v < NV; ++v) acc[r][v] += Abs(x - w[v]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < NV; ++v) Store(out + r * out_stride + v * kLanes, -acc[r][v]);
  }
}

// grad[r, d] = sum_f upstream[r, f] * clip(kernel_t[f, d] - patches[r, d])
// for R rows and NV vectors of depth.
template <int R, int NV>
void InputGradTile(const float* patches, int64_t patch_stride,
                   const float* kernel_t, int64_t kernel_stride,
                   const float* upstream, int64_t upstream_stride,
                   int64_t filters, float* grad, int64_t grad_stride) {
  const Vec clip_high = Broadcast(1.0f);
  const Vec clip_low = Broadcast(-1.0f);
  Vec x[R][NV];
  Vec acc[R][NV] = {};
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < NV; ++v) x[r][v] = Load(patches + r * patch_stride + v * kLanes);
  }
  for (int64_t f = 0; f < filters; ++f) {
    Vec w[NV];
    for (int v = 0; v < NV; ++v) w[v] = Load(kernel_t + f * kernel_stride + v * kLanes);
    for (int r = 0; r < R; ++r) {
      const Vec scale = Broadcast(upstream[r * upstream_stride + f]);
      for (int v = 0; v < NV; ++v) {
        Vec t = w[v] - x[r][v];
        // Comparisons with NaN are false, so NaN passes through both.
        t = t > clip_high ? clip_high : t;
        t = t < clip_low ? clip_low : t;
        acc[r][v] += scale * t;
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < NV; ++v) Store(grad + r * grad_stride + v * kLanes, acc[r][v]);
  }
}

// Tables of tile functions indexed by [rows - 1][vectors - 1], so the tails
// of a block use smaller tiles of the same code.
using DistanceFn = void (*)(const float*, int64_t, const float*, int64_t,
                            int64_t, float*, int64_t);
using InputGradFn = void (*)(const float*, int64_t, const float*, int64_t,
                             const float*, int64_t, int64_t, float*, int64_t);

template <int R, int... NV>
constexpr std::array<DistanceFn, sizeof...(NV)> DistanceRow(
    std::integer_sequence<int, NV...>) {
  return {&DistanceTile<R, NV + 1>...};
}

template <int... R>
constexpr std::array<std::array<DistanceFn, kForwardVectors>, sizeof...(R)>
DistanceTable(std::integer_sequence<int, R...>) {
  return {DistanceRow<R + 1>(
      std::make_integer_sequence<int, kForwardVectors>())...};
}

template <int R, int... NV>
constexpr std::array<InputGradFn, sizeof...(NV)> InputGradRow(
    std::integer_sequence<int, NV...>) {
  return {&InputGradTile<R, NV + 1>...};
}

template <int... R>
constexpr std::array<std::array<InputGradFn, kGradVectors>, sizeof...(R)>
InputGradTable(std::integer_sequence<int, R...>) {
  return {InputGradRow<R + 1>(
      std::make_integer_sequence<int, kGradVectors>())...};
}

const auto kDistanceTiles =
    DistanceTable(std::make_integer_sequence<int, kForwardRows>());
const auto kInputGradTiles =
    InputGradTable(std::make_integer_sequence<int, kGradRows>());

// Reads and checks the attributes shared by both operations.
class AdderConvBase : public OpKernel {
 public:
  explicit AdderConvBase(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("strides", &strides_));
    OP_REQUIRES(context, strides_.size() == 2,
                InvalidArgument("strides must have 2 values, got ",
                                strides_.size()));
    OP_REQUIRES(context, strides_[0] > 0 && strides_[1] > 0,
                InvalidArgument("strides must be positive, got ", strides_[0],
                                ", ", strides_[1]));
    std::string padding;
    OP_REQUIRES_OK(context, context->GetAttr("padding", &padding));
    same_ = padding == "SAME";
  }

 protected:
  // Checks the shapes of input and kernel, setting the context's status.
  void CheckShapes(OpKernelContext* context, const Tensor& input,
                   const Tensor& kernel) {
    OP_REQUIRES(context, input.dims() == 4,
                InvalidArgument("input must be 4-D (batch, height, width, "
                                "channels), got shape ",
                                input.shape().DebugString()));
    OP_REQUIRES(context, kernel.dims() == 4,
                InvalidArgument("kernel must be 4-D (height, width, "
                                "channels, filters), got shape ",
                                kernel.shape().DebugString()));
    OP_REQUIRES(context, input.dim_size(3) == kernel.dim_size(2),
                InvalidArgument("input channels ", input.dim_size(3),
                                " differ from kernel channels ",
                                kernel.dim_size(2)));
  }

  void RunShards(OpKernelContext* context, int64_t units, int64_t cost,
                 const std::function<void(int64_t, int64_t)>& work) {
    auto* workers = context->device()->tensorflow_cpu_worker_threads();
    ::tensorflow::Shard(workers->num_threads, workers->workers, units, cost,
                        work);
  }

  std::vector<int32_t> strides_;
  bool same_ = false;
};

class AdderConv2DOp : public AdderConvBase {
 public:
  using AdderConvBase::AdderConvBase;

  void Compute(OpKernelContext* context) override {
    const Tensor& input = context->input(0);
    const Tensor& kernel = context->input(1);
    CheckShapes(context, input, kernel);
    if (!context->status().ok()) return;
    const Geometry g = MakeGeometry(input, kernel, strides_, same_);
    OP_REQUIRES(context,
                same_ || (g.height >= g.kernel_height &&
                          g.width >= g.kernel_width),
                InvalidArgument("the input is smaller than the kernel, so the "
                                "'valid' output would be empty: input ",
                                g.height, "x", g.width, ", kernel ",
                                g.kernel_height, "x", g.kernel_width));

    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(
                                0,
                                TensorShape({g.batch, g.out_height,
                                             g.out_width, g.filters}),
                                &output));
    const int64_t positions = g.positions();
    if (g.batch == 0 || positions == 0 || g.filters == 0) return;

    // The kernel as a (depth, filters) matrix with the filters padded to
    // whole vectors; the padded columns are computed and dropped.
    const int64_t depth = g.depth();
    const int64_t padded_filters = RoundUp(g.filters, kLanes);
    std::vector<float> kernel_matrix(depth * padded_filters, 0.0f);
    const float* kernel_data = kernel.flat<float>().data();
    for (int64_t d = 0; d < depth; ++d) {
      std::memcpy(kernel_matrix.data() + d * padded_filters,
                  kernel_data + d * g.filters, g.filters * sizeof(float));
    }

    const float* input_data = input.flat<float>().data();
    float* output_data = output->flat<float>().data();
    const int64_t blocks_per_image = (positions + kBlockRows - 1) / kBlockRows;
    const int64_t blocks = g.batch * blocks_per_image;
    const int64_t cost = kBlockRows * depth * padded_filters * 3;

    RunShards(context, blocks, cost, [&](int64_t begin, int64_t end) {
      std::vector<float> patches(kBlockRows * depth);
      std::vector<float> out(kBlockRows * padded_filters);
      for (int64_t block = begin; block < end; ++block) {
        const int64_t image = block / blocks_per_image;
        const int64_t first = (block % blocks_per_image) * kBlockRows;
        const int64_t rows = std::min(kBlockRows, positions - first);
        GatherWindows(g, input_data + image * g.height * g.width * g.channels,
                      first, rows, patches.data(), depth);

        for (int64_t r = 0; r < rows; r += kForwardRows) {
          const int tile_rows = std::min<int64_t>(kForwardRows, rows - r);
          for (int64_t f = 0; f < padded_filters;
               f += kForwardVectors * kLanes) {
            const int vectors = std::min<int64_t>(
                kForwardVectors, (padded_filters - f) / kLanes);
            kDistanceTiles[tile_rows - 1][vectors - 1](
                patches.data() + r * depth, depth, kernel_matrix.data() + f,
                padded_filters, depth, out.data() + r * padded_filters + f,
                padded_filters);
          }
        }

        float* target =
            output_data + (image * positions + first) * g.filters;
        for (int64_t r = 0; r < rows; ++r) {
          std::memcpy(target + r * g.filters, out.data() + r * padded_filters,
                      g.filters * sizeof(float));
        }
      }
    });
  }
};

class AdderConv2DInputGradOp : public AdderConvBase {
 public:
  using AdderConvBase::AdderConvBase;

  void Compute(OpKernelContext* context) override {
    const Tensor& input = context->input(0);
    const Tensor& kernel = context->input(1);
    const Tensor& upstream = context->input(2);
    CheckShapes(context, input, kernel);
    if (!context->status().ok()) return;
    const Geometry g = MakeGeometry(input, kernel, strides_, same_);
    OP_REQUIRES(
        context,
        upstream.dims() == 4 && upstream.dim_size(0) == g.batch &&
            upstream.dim_size(1) == g.out_height &&
            upstream.dim_size(2) == g.out_width &&
            upstream.dim_size(3) == g.filters,
        InvalidArgument("upstream gradient has shape ",
                        upstream.shape().DebugString(), ", expected [",
                        g.batch, ",", g.out_height, ",", g.out_width, ",",
                        g.filters, "]"));

    Tensor* grad = nullptr;
    OP_REQUIRES_OK(context,
                   context->allocate_output(0, input.shape(), &grad));
    float* grad_data = grad->flat<float>().data();
    const int64_t image_size = g.height * g.width * g.channels;
    std::fill(grad_data, grad_data + g.batch * image_size, 0.0f);
    const int64_t positions = g.positions();
    if (g.batch == 0 || positions == 0 || g.filters == 0) return;

    // The kernel transposed to (filters, depth), the depth padded to whole
    // vectors with zeros.
    const int64_t depth = g.depth();
    const int64_t padded_depth = RoundUp(depth, kLanes);
    std::vector<float> kernel_t(g.filters * padded_depth, 0.0f);
    const float* kernel_data = kernel.flat<float>().data();
    for (int64_t d = 0; d < depth; ++d) {
      for (int64_t f = 0; f < g.filters; ++f) {
        kernel_t[f * padded_depth + d] = kernel_data[d * g.filters + f];
      }
    }

    const float* input_data = input.flat<float>().data();
    const float* upstream_data = upstream.flat<float>().data();
    const int64_t cost = positions * padded_depth * g.filters * 4;

    // One image per work unit: windows of one image overlap, so the scatter
    // into its gradient must not run on two threads at once.
    RunShards(context, g.batch, cost, [&](int64_t begin, int64_t end) {
      std::vector<float> patches(kBlockRows * padded_depth);
      std::vector<float> window_grad(kBlockRows * padded_depth);
      for (int64_t image = begin; image < end; ++image) {
        for (int64_t first = 0; first < positions; first += kBlockRows) {
          const int64_t rows = std::min(kBlockRows, positions - first);
          GatherWindows(g, input_data + image * image_size, first, rows,
                        patches.data(), padded_depth);
          const float* upstream_rows =
              upstream_data + (image * positions + first) * g.filters;

          for (int64_t r = 0; r < rows; r += kGradRows) {
            const int tile_rows = std::min<int64_t>(kGradRows, rows - r);
            for (int64_t d = 0; d < padded_depth; d += kGradVectors * kLanes) {
              const int vectors = std::min<int64_t>(
                  kGradVectors, (padded_depth - d) / kLanes);
              kInputGradTiles[tile_rows - 1][vectors - 1](
                  patches.data() + r * padded_depth + d, padded_depth,
                  kernel_t.data() + d, padded_depth,
                  upstream_rows + r * g.filters, g.filters, g.filters,
                  window_grad.data() + r * padded_depth + d, padded_depth);
            }
          }
          ScatterWindows(g, window_grad.data(), padded_depth, first, rows,
                         grad_data + image * image_size);
        }
      }
    });
  }
};

}  // namespace

REGISTER_OP("KerasShiftaddAdderConv2D")
    .Input("input: float")
    .Input("kernel: float")
    .Output("output: float")
    .Attr("strides: list(int)")
    .Attr("padding: {'SAME', 'VALID'}")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      ::tensorflow::shape_inference::ShapeHandle input, kernel;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &input));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &kernel));
      std::vector<int32_t> strides;
      std::string padding;
      TF_RETURN_IF_ERROR(c->GetAttr("strides", &strides));
      TF_RETURN_IF_ERROR(c->GetAttr("padding", &padding));
      if (strides.size() != 2 || strides[0] < 1 || strides[1] < 1) {
        return InvalidArgument("strides must be 2 positive values");
      }
      // Output height and width where the input and kernel sizes are known.
      ::tensorflow::shape_inference::DimensionHandle spatial[2];
      for (int axis = 0; axis < 2; ++axis) {
        auto length = c->Dim(input, axis + 1);
        auto size = c->Dim(kernel, axis);
        if (c->ValueKnown(length) && c->ValueKnown(size)) {
          spatial[axis] = c->MakeDim(OutputLength(
              c->Value(length), c->Value(size), strides[axis],
              padding == "SAME"));
        } else {
          spatial[axis] = c->UnknownDim();
        }
      }
      c->set_output(0, c->MakeShape({c->Dim(input, 0), spatial[0], spatial[1],
                                     c->Dim(kernel, 3)}));
      return ::tensorflow::OkStatus();
    });

REGISTER_OP("KerasShiftaddAdderConv2DInputGrad")
    .Input("input: float")
    .Input("kernel: float")
    .Input("upstream: float")
    .Output("input_grad: float")
    .Attr("strides: list(int)")
    .Attr("padding: {'SAME', 'VALID'}")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      return ::tensorflow::OkStatus();
    });

REGISTER_KERNEL_BUILDER(
    Name("KerasShiftaddAdderConv2D").Device(::tensorflow::DEVICE_CPU),
    AdderConv2DOp);
REGISTER_KERNEL_BUILDER(
    Name("KerasShiftaddAdderConv2DInputGrad").Device(::tensorflow::DEVICE_CPU),
    AdderConv2DInputGradOp);

}  // namespace keras_shiftadd

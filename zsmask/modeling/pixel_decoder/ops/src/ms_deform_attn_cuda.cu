// zsmask: CUDA kernels of multi-scale deformable attention, the core of Eq. 2/3 of
// "Deformable DETR" (Zhu et al., ICLR 2021):
//   out[n, q, m, :] = sum_l sum_p A[n, q, m, l, p] * bilinear(value_l[n, :, m, :], loc[n, q, m, l, p])
// with grid_sample's conventions (align_corners=False, zero padding): pixel = loc * size - 0.5.
//
// Layouts (all contiguous): value (N, S, M, D); spatial_shapes (L, 2) int64 (H, W);
// level_start_index (L,) int64; sampling_locations (N, Lq, M, L, P, 2) as (x, y);
// attention_weights (N, Lq, M, L, P); output (N, Lq, M*D).
//
// Forward: one thread per output element (n, q, m, d); consecutive threads read consecutive
// channels. Backward: one warp per sampling point (n, q, m, l, p); the lanes loop over the
// channels, scatter into grad_value with atomicAdd, and reduce the dot products that give the
// location and attention-weight gradients with warp shuffles. The batch is processed in chunks of
// im2col_step samples.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/Atomic.cuh>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <vector>

namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;

inline int64_t blocks_for(int64_t threads_needed) {
  const int64_t max_blocks = 65535LL * 8;
  return std::min<int64_t>((threads_needed + kThreads - 1) / kThreads, max_blocks);
}

// The four bilinear corners of a point: integer origin, fractions, and an in-bounds flag each.
template <typename acc_t>
struct Corners {
  int x0, y0;
  acc_t fx, fy;
  bool in00, in01, in10, in11;  // (dy, dx)

  __device__ Corners(acc_t x, acc_t y, int height, int width) {
    const acc_t x_floor = floor(x), y_floor = floor(y);
    x0 = static_cast<int>(x_floor);
    y0 = static_cast<int>(y_floor);
    fx = x - x_floor;
    fy = y - y_floor;
    const bool x0_in = x0 >= 0 && x0 < width, x1_in = x0 + 1 >= 0 && x0 + 1 < width;
    const bool y0_in = y0 >= 0 && y0 < height, y1_in = y0 + 1 >= 0 && y0 + 1 < height;
    in00 = y0_in && x0_in;
    in01 = y0_in && x1_in;
    in10 = y1_in && x0_in;
    in11 = y1_in && x1_in;
  }
};

template <typename scalar_t, typename acc_t>
__global__ void forward_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ spatial_shapes,
                               const int64_t* __restrict__ level_start_index,
                               const scalar_t* __restrict__ sampling_locations,
                               const scalar_t* __restrict__ attention_weights, scalar_t* __restrict__ output,
                               int64_t batch, int64_t positions, int64_t queries, int heads, int channels,
                               int levels, int points) {
  const int64_t total = batch * queries * heads * channels;
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int d = index % channels;
    const int64_t nqm = index / channels;  // (n, q, m) flattened
    const int m = nqm % heads;
    const int64_t n = nqm / (heads * queries);
    const scalar_t* locations = sampling_locations + nqm * levels * points * 2;
    const scalar_t* weights = attention_weights + nqm * levels * points;
    acc_t sum = 0;
    for (int l = 0; l < levels; ++l) {
      const int height = static_cast<int>(spatial_shapes[2 * l]);
      const int width = static_cast<int>(spatial_shapes[2 * l + 1]);
      // value[n, start_l + y * W + x, m, d] = level_value[(y * W + x) * heads * channels]
      const scalar_t* level_value =
          value + ((n * positions + level_start_index[l]) * heads + m) * channels + d;
      const int64_t row_stride = static_cast<int64_t>(heads) * channels;
      for (int p = 0; p < points; ++p) {
        const int sample = l * points + p;
        const acc_t x = static_cast<acc_t>(locations[2 * sample]) * width - acc_t(0.5);
        const acc_t y = static_cast<acc_t>(locations[2 * sample + 1]) * height - acc_t(0.5);
        if (!(x > -1 && y > -1 && x < width && y < height)) continue;
        const Corners<acc_t> c(x, y, height, width);
        const int64_t base = static_cast<int64_t>(c.y0) * width + c.x0;
        acc_t sampled = 0;
        if (c.in00) sampled += (1 - c.fy) * (1 - c.fx) * static_cast<acc_t>(level_value[base * row_stride]);
        if (c.in01) sampled += (1 - c.fy) * c.fx * static_cast<acc_t>(level_value[(base + 1) * row_stride]);
        if (c.in10) sampled += c.fy * (1 - c.fx) * static_cast<acc_t>(level_value[(base + width) * row_stride]);
        if (c.in11) sampled += c.fy * c.fx * static_cast<acc_t>(level_value[(base + width + 1) * row_stride]);
        sum += static_cast<acc_t>(weights[sample]) * sampled;
      }
    }
    output[index] = static_cast<scalar_t>(sum);
  }
}

template <typename acc_t>
__device__ acc_t warp_sum(acc_t v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

template <typename scalar_t, typename acc_t>
__global__ void backward_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ spatial_shapes,
                                const int64_t* __restrict__ level_start_index,
                                const scalar_t* __restrict__ sampling_locations,
                                const scalar_t* __restrict__ attention_weights,
                                const scalar_t* __restrict__ grad_output, acc_t* __restrict__ grad_value,
                                scalar_t* __restrict__ grad_locations, scalar_t* __restrict__ grad_weights,
                                int64_t batch, int64_t positions, int64_t queries, int heads, int channels,
                                int levels, int points) {
  const int64_t samples = batch * queries * heads * levels * points;
  const int lane = threadIdx.x % kWarp;
  const int64_t warps_per_grid = static_cast<int64_t>(gridDim.x) * blockDim.x / kWarp;
  for (int64_t sample = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp; sample < samples;
       sample += warps_per_grid) {
    // The loop bound is uniform across a warp, so every lane reaches the shuffles together.
    const int lp = sample % (levels * points);
    const int l = lp / points;
    const int64_t nqm = sample / (levels * points);
    const int m = nqm % heads;
    const int64_t n = nqm / (heads * queries);
    const int height = static_cast<int>(spatial_shapes[2 * l]);
    const int width = static_cast<int>(spatial_shapes[2 * l + 1]);
    const acc_t x = static_cast<acc_t>(sampling_locations[2 * sample]) * width - acc_t(0.5);
    const acc_t y = static_cast<acc_t>(sampling_locations[2 * sample + 1]) * height - acc_t(0.5);
    const acc_t weight = static_cast<acc_t>(attention_weights[sample]);
    acc_t dot_sampled = 0, dot_dx = 0, dot_dy = 0;
    if (x > -1 && y > -1 && x < width && y < height) {
      const Corners<acc_t> c(x, y, height, width);
      const int64_t row_stride = static_cast<int64_t>(heads) * channels;
      const int64_t level_offset = ((n * positions + level_start_index[l]) * heads + m) * channels;
      const int64_t base = static_cast<int64_t>(c.y0) * width + c.x0;
      const int64_t off00 = level_offset + base * row_stride, off01 = off00 + row_stride;
      const int64_t off10 = level_offset + (base + width) * row_stride, off11 = off10 + row_stride;
      const acc_t w00 = (1 - c.fy) * (1 - c.fx), w01 = (1 - c.fy) * c.fx;
      const acc_t w10 = c.fy * (1 - c.fx), w11 = c.fy * c.fx;
      const scalar_t* grad_out = grad_output + nqm * channels;
      for (int d = lane; d < channels; d += kWarp) {
        const acc_t g = static_cast<acc_t>(grad_out[d]);
        const acc_t v00 = c.in00 ? static_cast<acc_t>(value[off00 + d]) : acc_t(0);
        const acc_t v01 = c.in01 ? static_cast<acc_t>(value[off01 + d]) : acc_t(0);
        const acc_t v10 = c.in10 ? static_cast<acc_t>(value[off10 + d]) : acc_t(0);
        const acc_t v11 = c.in11 ? static_cast<acc_t>(value[off11 + d]) : acc_t(0);
        dot_sampled += g * (w00 * v00 + w01 * v01 + w10 * v10 + w11 * v11);
        dot_dx += g * ((1 - c.fy) * (v01 - v00) + c.fy * (v11 - v10));
        dot_dy += g * ((1 - c.fx) * (v10 - v00) + c.fx * (v11 - v01));
        const acc_t wg = weight * g;
        if (c.in00) gpuAtomicAdd(grad_value + off00 + d, w00 * wg);
        if (c.in01) gpuAtomicAdd(grad_value + off01 + d, w01 * wg);
        if (c.in10) gpuAtomicAdd(grad_value + off10 + d, w10 * wg);
        if (c.in11) gpuAtomicAdd(grad_value + off11 + d, w11 * wg);
      }
    }
    dot_sampled = warp_sum(dot_sampled);
    dot_dx = warp_sum(dot_dx);
    dot_dy = warp_sum(dot_dy);
    if (lane == 0) {
      grad_weights[sample] = static_cast<scalar_t>(dot_sampled);
      // d pixel / d loc is the level size (pixel = loc * size - 0.5).
      grad_locations[2 * sample] = static_cast<scalar_t>(weight * dot_dx * width);
      grad_locations[2 * sample + 1] = static_cast<scalar_t>(weight * dot_dy * height);
    }
  }
}

struct Dims {
  int64_t batch, positions, queries;
  int heads, channels, levels, points;
};

Dims dims_of(const at::Tensor& value, const at::Tensor& sampling_locations) {
  return {value.size(0), value.size(1), sampling_locations.size(1), static_cast<int>(value.size(2)),
          static_cast<int>(value.size(3)), static_cast<int>(sampling_locations.size(3)),
          static_cast<int>(sampling_locations.size(4))};
}

}  // namespace

at::Tensor ms_deform_attn_cuda_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index,
                                       const at::Tensor& sampling_locations,
                                       const at::Tensor& attention_weights, int64_t im2col_step) {
  const c10::cuda::CUDAGuard device_guard(value.device());
  const Dims dims = dims_of(value, sampling_locations);
  auto output = at::empty({dims.batch, dims.queries, dims.heads * dims.channels}, value.options());
  const int64_t step = std::max<int64_t>(1, std::min(dims.batch, im2col_step));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(value.scalar_type(), "ms_deform_attn_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t value_per_item = dims.positions * dims.heads * dims.channels;
    const int64_t samples_per_item = dims.queries * dims.heads * dims.levels * dims.points;
    const int64_t out_per_item = dims.queries * dims.heads * dims.channels;
    for (int64_t start = 0; start < dims.batch; start += step) {
      const int64_t count = std::min(step, dims.batch - start);
      const int64_t threads_needed = count * out_per_item;
      if (threads_needed == 0) continue;
      forward_kernel<scalar_t, acc_t><<<blocks_for(threads_needed), kThreads, 0, stream>>>(
          value.data_ptr<scalar_t>() + start * value_per_item, spatial_shapes.data_ptr<int64_t>(),
          level_start_index.data_ptr<int64_t>(), sampling_locations.data_ptr<scalar_t>() + start * samples_per_item * 2,
          attention_weights.data_ptr<scalar_t>() + start * samples_per_item,
          output.data_ptr<scalar_t>() + start * out_per_item, count, dims.positions, dims.queries, dims.heads,
          dims.channels, dims.levels, dims.points);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return output;
}

std::vector<at::Tensor> ms_deform_attn_cuda_backward(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations, const at::Tensor& attention_weights,
    const at::Tensor& grad_output, int64_t im2col_step) {
  const c10::cuda::CUDAGuard device_guard(value.device());
  const Dims dims = dims_of(value, sampling_locations);
  auto grad_locations = at::empty_like(sampling_locations);
  auto grad_weights = at::empty_like(attention_weights);
  // Half precision scatters into a float buffer: many atomic adds land on one value element.
  const auto accumulate_type = value.scalar_type() == at::kHalf ? at::kFloat : value.scalar_type();
  auto grad_value_acc = at::zeros(value.sizes(), value.options().dtype(accumulate_type));
  const int64_t step = std::max<int64_t>(1, std::min(dims.batch, im2col_step));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(value.scalar_type(), "ms_deform_attn_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t value_per_item = dims.positions * dims.heads * dims.channels;
    const int64_t samples_per_item = dims.queries * dims.heads * dims.levels * dims.points;
    const int64_t out_per_item = dims.queries * dims.heads * dims.channels;
    for (int64_t start = 0; start < dims.batch; start += step) {
      const int64_t count = std::min(step, dims.batch - start);
      const int64_t threads_needed = count * samples_per_item * kWarp;
      if (threads_needed == 0) continue;
      backward_kernel<scalar_t, acc_t><<<blocks_for(threads_needed), kThreads, 0, stream>>>(
          value.data_ptr<scalar_t>() + start * value_per_item, spatial_shapes.data_ptr<int64_t>(),
          level_start_index.data_ptr<int64_t>(), sampling_locations.data_ptr<scalar_t>() + start * samples_per_item * 2,
          attention_weights.data_ptr<scalar_t>() + start * samples_per_item,
          grad_output.data_ptr<scalar_t>() + start * out_per_item,
          grad_value_acc.data_ptr<acc_t>() + start * value_per_item,
          grad_locations.data_ptr<scalar_t>() + start * samples_per_item * 2,
          grad_weights.data_ptr<scalar_t>() + start * samples_per_item, count, dims.positions, dims.queries,
          dims.heads, dims.channels, dims.levels, dims.points);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {grad_value_acc.to(value.scalar_type()), grad_locations, grad_weights};
}

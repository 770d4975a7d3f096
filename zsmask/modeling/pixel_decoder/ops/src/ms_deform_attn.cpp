// zsmask: Python binding and input checks of the multi-scale deformable attention kernel
// (core of Eq. 2/3 of "Deformable DETR", Zhu et al., ICLR 2021). Kernels: ms_deform_attn_cuda.cu.
#include <torch/extension.h>

#include <vector>

at::Tensor ms_deform_attn_cuda_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index,
                                       const at::Tensor& sampling_locations,
                                       const at::Tensor& attention_weights, int64_t im2col_step);

std::vector<at::Tensor> ms_deform_attn_cuda_backward(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations, const at::Tensor& attention_weights,
    const at::Tensor& grad_output, int64_t im2col_step);

namespace {

void check_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes,
                  const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                  const at::Tensor& attention_weights, int64_t im2col_step) {
  const std::vector<std::pair<const char*, const at::Tensor*>> all = {
      {"value", &value},
      {"spatial_shapes", &spatial_shapes},
      {"level_start_index", &level_start_index},
      {"sampling_locations", &sampling_locations},
      {"attention_weights", &attention_weights}};
  for (const auto& named : all) {
    TORCH_CHECK(named.second->is_cuda(), "ms_deform_attn kernel: ", named.first,
                " must be a CUDA tensor, got device ", named.second->device());
    TORCH_CHECK(named.second->is_contiguous(), "ms_deform_attn kernel: ", named.first,
                " must be contiguous (call .contiguous())");
    TORCH_CHECK(named.second->device() == value.device(), "ms_deform_attn kernel: ", named.first,
                " is on ", named.second->device(), " but value is on ", value.device());
  }
  TORCH_CHECK(spatial_shapes.scalar_type() == at::kLong && level_start_index.scalar_type() == at::kLong,
              "ms_deform_attn kernel: spatial_shapes and level_start_index must be int64");
  TORCH_CHECK(at::isFloatingType(value.scalar_type()),
              "ms_deform_attn kernel: value must be floating point, got ", value.scalar_type());
  TORCH_CHECK(sampling_locations.scalar_type() == value.scalar_type() &&
                  attention_weights.scalar_type() == value.scalar_type(),
              "ms_deform_attn kernel: value, sampling_locations and attention_weights must share one "
              "dtype, got ", value.scalar_type(), ", ", sampling_locations.scalar_type(), ", ",
              attention_weights.scalar_type());
  TORCH_CHECK(value.dim() == 4, "ms_deform_attn kernel: value must be (N, S, M, D), got ",
              value.sizes());
  TORCH_CHECK(sampling_locations.dim() == 6 && sampling_locations.size(5) == 2,
              "ms_deform_attn kernel: sampling_locations must be (N, Lq, M, L, P, 2), got ",
              sampling_locations.sizes());
  const int64_t levels = spatial_shapes.size(0);
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2,
              "ms_deform_attn kernel: spatial_shapes must be (L, 2), got ", spatial_shapes.sizes());
  TORCH_CHECK(level_start_index.dim() == 1 && level_start_index.size(0) == levels,
              "ms_deform_attn kernel: level_start_index must be (L,) = (", levels, "), got ",
              level_start_index.sizes());
  TORCH_CHECK(sampling_locations.size(0) == value.size(0) && sampling_locations.size(2) == value.size(2) &&
                  sampling_locations.size(3) == levels,
              "ms_deform_attn kernel: sampling_locations ", sampling_locations.sizes(),
              " does not match value ", value.sizes(), " and L = ", levels);
  TORCH_CHECK(attention_weights.dim() == 5 &&
                  attention_weights.sizes() == sampling_locations.sizes().slice(0, 5),
              "ms_deform_attn kernel: attention_weights must be ", sampling_locations.sizes().slice(0, 5),
              ", got ", attention_weights.sizes());
  TORCH_CHECK(im2col_step > 0, "ms_deform_attn kernel: im2col_step must be positive, got ", im2col_step);
}

at::Tensor forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                   const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                   const at::Tensor& attention_weights, int64_t im2col_step) {
  check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
               im2col_step);
  return ms_deform_attn_cuda_forward(value, spatial_shapes, level_start_index, sampling_locations,
                                     attention_weights, im2col_step);
}

std::vector<at::Tensor> backward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                 const at::Tensor& level_start_index,
                                 const at::Tensor& sampling_locations,
                                 const at::Tensor& attention_weights, const at::Tensor& grad_output,
                                 int64_t im2col_step) {
  check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
               im2col_step);
  TORCH_CHECK(grad_output.is_cuda() && grad_output.is_contiguous() &&
                  grad_output.scalar_type() == value.scalar_type(),
              "ms_deform_attn kernel: grad_output must be a contiguous CUDA tensor of value's dtype");
  TORCH_CHECK(grad_output.dim() == 3 && grad_output.size(0) == value.size(0) &&
                  grad_output.size(1) == sampling_locations.size(1) &&
                  grad_output.size(2) == value.size(2) * value.size(3),
              "ms_deform_attn kernel: grad_output must be (N, Lq, M*D), got ", grad_output.sizes());
  return ms_deform_attn_cuda_backward(value, spatial_shapes, level_start_index, sampling_locations,
                                      attention_weights, grad_output, im2col_step);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "zsmask multi-scale deformable attention CUDA kernel (Deformable DETR, Eq. 2/3)";
  m.def("forward", &forward,
        "(value (N,S,M,D), spatial_shapes (L,2), level_start_index (L,), sampling_locations "
        "(N,Lq,M,L,P,2), attention_weights (N,Lq,M,L,P), im2col_step) -> (N,Lq,M*D)");
  m.def("backward", &backward,
        "(..., grad_output (N,Lq,M*D), im2col_step) -> [grad_value, grad_sampling_locations, "
        "grad_attention_weights]");
}

/* The x86 int8 tables (placeholder: the reference kernel until the vector kernels land). */
#include "kernels/int8.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(LENET_NO_WIDE_VECTORS)
const lenet_i8_kernels lenet__i8_kernels_avx2 = {.isa = "avx2", .conv = lenet__i8_conv_ref};
const lenet_i8_kernels lenet__i8_kernels_avxvnni = {.isa = "avxvnni", .conv = lenet__i8_conv_ref};
const lenet_i8_kernels lenet__i8_kernels_avxvnni_evex = {.isa = "avxvnni", .conv = lenet__i8_conv_ref};
const lenet_i8_kernels lenet__i8_kernels_avx512vnni = {.isa = "avx512vnni", .conv = lenet__i8_conv_ref};
#endif

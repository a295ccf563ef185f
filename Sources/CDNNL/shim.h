// oneDNN's C API: bf16 matrix products with fp32 accumulation (Debian's libdnnl-dev).
#include <oneapi/dnnl/dnnl.h>
// oneDNN runs its products on OpenMP threads (libgomp); the core sets their count.
void omp_set_num_threads(int num_threads);

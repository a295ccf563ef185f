/* Entry points of libace_core.so for tests and benchmarks: they expose the core's internals
 * (its matrix products, its local loss) so those can be checked against independent
 * implementations and timed. Not part of the API in ace.h; they may change with the core.
 * Same conventions: 0 on success, the message of a failure in ace_last_error().
 */
#ifndef ACE_TESTING_H
#define ACE_TESTING_H

#include "ace.h"

#ifdef __cplusplus
extern "C" {
#endif

/* C = op(A) op(B), row-major, in "fp32", "bf16" or "auto" precision. */
int32_t ace_gemm(int32_t trans_a, int32_t trans_b, int64_t m, int64_t n, int64_t k,
                 const float *a, const float *b, float *c, const char *precision /* NULL: fp32 */);

/* The composition/decomposition loss on given arrays: teacher (B, N, C), z (B, Nz, C),
 * targets (B, N, Nz) -> mean loss, matching accuracy (rows with a target whose best
 * column is the target's peak) and dz (B, Nz, C). */
int32_t ace_local_match_loss(const float *teacher, const float *z, const float *targets,
                             int64_t batch, int64_t n, int64_t nz, int64_t c, float alpha,
                             float scale, double *loss, double *accuracy, float *dz);

#ifdef __cplusplus
}
#endif

#endif

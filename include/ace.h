/* C ABI of the ACE core (libace_core.so).
 *
 * Every function that can fail returns 0 on success and nonzero on failure; the message
 * of the calling thread's last failure is ace_last_error(). Handles are opaque; one
 * handle's calls are serialized by a lock inside the library.
 */
#ifndef ACE_H
#define ACE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

const char *ace_last_error(void);
int32_t ace_set_num_threads(int32_t n);
int32_t ace_get_num_threads(void);
int32_t ace_gemm(int32_t trans_a, int32_t trans_b, int64_t m, int64_t n, int64_t k,
                 const float *a, const float *b, float *c);

/* Encoders (timm-style Vision Transformers). */
int32_t ace_encoder_create(const char *preset, int32_t in_chans, int32_t img_size,
                           float drop_path, uint64_t seed, void **out);
int32_t ace_encoder_create_from_json(const char *config_json, uint64_t seed, void **out);
int32_t ace_encoder_load(const char *path, void **out);
void ace_encoder_free(void *encoder);
int32_t ace_encoder_save(void *encoder, const char *path);
const char *ace_encoder_config(void *encoder);
int32_t ace_encoder_num_tensors(void *encoder);
int32_t ace_encoder_tensor_info(void *encoder, int32_t index, const char **name,
                                int32_t *ndim, int64_t *shape /* 4 entries */);
int32_t ace_encoder_get_tensor(void *encoder, int32_t index, float *dst, int64_t count);
int32_t ace_encoder_set_tensor(void *encoder, int32_t index, const float *src, int64_t count);
int32_t ace_encoder_forward_features(void *encoder, const float *x, int64_t batch,
                                     int64_t channels, int64_t height, int64_t width,
                                     float *out, int64_t out_count);

#ifdef __cplusplus
}
#endif

#endif

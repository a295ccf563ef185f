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

/* Encoders: timm-style Vision Transformers (vit_*) or Swin Transformers (swin_*; a config with
   "depths"; files with "backbone": "swin" in the metadata). forward_features writes
   (B, 1 + h*w, C) for a ViT (class token first), (B, g*g, C_final) for a Swin (final grid). */
int32_t ace_encoder_create(const char *preset, int32_t in_chans, int32_t img_size,
                           float drop_path, uint64_t seed, void **out);
int32_t ace_encoder_create_from_json(const char *config_json, uint64_t seed, void **out);
int32_t ace_encoder_load(const char *path, void **out);
void ace_encoder_free(void *encoder);
/* preprocessing: NULL or a JSON string stored as the file's "preprocessing" metadata. */
int32_t ace_encoder_save(void *encoder, const char *path, const char *preprocessing);
const char *ace_encoder_config(void *encoder);
int32_t ace_encoder_num_tensors(void *encoder);
int32_t ace_encoder_tensor_info(void *encoder, int32_t index, const char **name,
                                int32_t *ndim, int64_t *shape /* 4 entries */);
int32_t ace_encoder_get_tensor(void *encoder, int32_t index, float *dst, int64_t count);
int32_t ace_encoder_set_tensor(void *encoder, int32_t index, const float *src, int64_t count);
int32_t ace_encoder_forward_features(void *encoder, const float *x, int64_t batch,
                                     int64_t channels, int64_t height, int64_t width,
                                     float *out, int64_t out_count);
/* The last block's attention probabilities of the class token's query (an inference forward):
 * out (batch, num_heads, 1 + h*w), each row summing to 1; out_count must equal that size. */
int32_t ace_encoder_forward_attention(void *encoder, const float *x, int64_t batch,
                                      int64_t channels, int64_t height, int64_t width,
                                      float *out, int64_t out_count);

/* Precision of the products: "auto" (bf16 where the CPU has AVX512-BF16 or AMX, else fp32),
 * "bf16" (bf16 operands, fp32 accumulation, through oneDNN) or "fp32" (OpenBLAS, the reference). */
int32_t ace_encoder_set_precision(void *encoder, const char *precision);
const char *ace_encoder_precision(void *encoder); /* "bf16" or "fp32" */
const char *ace_precision_info(void);              /* JSON: {"auto": ..., "hardware_bf16": ...} */
const char *ace_pretrain_config_defaults(void);    /* JSON: every PretrainConfig setting's default */
const char *ace_swin_geometry(void);               /* JSON: the settings a Swin encoder changes */
const char *ace_presets(void);                     /* JSON: preset name -> width, depth(s), heads */

/* Fine-tuning: a training forward (drop path on), backward of d loss / d output (its shape
 * must be the output's; accumulates parameter gradients), and an AdamW update that zeroes them. */
int32_t ace_encoder_forward_train(void *encoder, const float *x, int64_t batch, int64_t channels,
                                  int64_t height, int64_t width, float *out, int64_t out_count);
int32_t ace_encoder_backward(void *encoder, const float *d_out, int64_t batch, int64_t tokens,
                             int64_t channels);
int32_t ace_encoder_adamw_step(void *encoder, float lr, float weight_decay);

/* Pretraining runs (ACE and the DINO baseline). */
#define ACE_TRAINER_STATS 11 /* the values a step writes; their names, in order: */
const char *ace_trainer_stat_names(void); /* comma-separated: "loss,global,comp,..." */
int32_t ace_trainer_create(const char *config_json, uint64_t seed, void **out);
int32_t ace_trainer_load(const char *path, void **out);
void ace_trainer_free(void *trainer);
const char *ace_trainer_config(void *trainer);
/* run_state: NULL or a JSON string stored as the file's "run" metadata. */
int32_t ace_trainer_save(void *trainer, const char *path, const char *run_state);
/* images (batch, channels, height, width) float32 in [0, 1]; channels must be the run's in_chans. */
int32_t ace_trainer_step(void *trainer, const float *images, int64_t batch, int64_t channels,
                         int64_t height, int64_t width, double *stats /* ACE_TRAINER_STATS */);
int64_t ace_trainer_steps(void *trainer); /* steps taken so far */
/* A step in two halves, for data-parallel training: compute_gradients (first_image: the global
 * position of images[0] in the step's batch; stats: the loss terms) fills the gradient buffer
 * and the center statistic; the caller may average them across processes; apply_gradients
 * clips, updates and returns the full stats. ace_trainer_step is the two in one call. */
int32_t ace_trainer_compute_gradients(void *trainer, const float *images, int64_t batch,
                                      int64_t channels, int64_t height, int64_t width, int64_t first_image,
                                      double *stats /* ACE_TRAINER_STATS */);
int32_t ace_trainer_apply_gradients(void *trainer, double *stats /* ACE_TRAINER_STATS */);
/* which: 0 all trainable gradients (one contiguous float32 buffer), 1 the DINO center's batch
 * statistic; valid while the trainer lives. */
int32_t ace_trainer_buffer(void *trainer, int32_t which, float **data, int64_t *count);
/* which: 0 student, 1 teacher; the encoder shares the trainer's weights. */
int32_t ace_trainer_encoder(void *trainer, int32_t which, void **out);

/* Resizes count single-channel images (height x width, contiguous) to out_height x out_width
 * with the resampler that makes the training views (area average down, bilinear up). */
int32_t ace_resize(const float *src, int64_t count, int64_t height, int64_t width, float *dst,
                   int64_t out_height, int64_t out_width);

/* Grid crops for inspection; buffers sized by the caller from the config (N = fine_cells^2):
 * boxes count x 8, o1 / o2 count x N, t_comp count x N x N/4, t_decomp count x N x 4N;
 * image (image_size^2) and views (count x input_size^2) may be NULL. lengths: the element
 * counts of the eight buffers in that order, checked before anything is written. */
int32_t ace_grid_crops(const char *config_json, uint64_t seed, int64_t count, int32_t *boxes,
                       uint8_t *o1, uint8_t *o2, float *t_comp, float *t_decomp,
                       const float *image, float *views1, float *views2, const int64_t *lengths);

#ifdef __cplusplus
}
#endif

#endif

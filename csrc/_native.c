/* ace._native: the CPython + NumPy binding of libace_core.so.
 *
 * Thin on purpose: argument checking that needs Python knowledge (dtype conversion,
 * image resizing) lives in python/ace; everything numeric is one call into the core,
 * made with the GIL released. Core failures become ace.ACEError with the core's message.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

#include "ace.h"
#include "ace_testing.h"   /* gemm, local_match_loss: for the tests */

static PyObject *ACEError; /* ace.errors.ACEError */

static PyObject *raise_core_error(void) {
    const char *msg = ace_last_error();
    PyErr_SetString(ACEError, msg ? msg : "unknown error in the ACE core");
    return NULL;
}

/* A float32, C-contiguous, aligned view or copy of obj with the given ndim. */
static PyArrayObject *float_array(PyObject *obj, int ndim, const char *what) {
    if (!PyArray_Check(obj) || PyArray_TYPE((PyArrayObject *)obj) != NPY_FLOAT32) {
        PyErr_Format(ACEError, "%s must be a float32 NumPy array", what);
        return NULL;
    }
    if (PyArray_NDIM((PyArrayObject *)obj) != ndim) {
        PyErr_Format(ACEError, "%s must have %d dimensions, got %d", what, ndim,
                     PyArray_NDIM((PyArrayObject *)obj));
        return NULL;
    }
    return (PyArrayObject *)PyArray_FROM_OTF(obj, NPY_FLOAT32, NPY_ARRAY_IN_ARRAY);
}

/* Runs a core call without the GIL: it may compute, or wait for a handle's lock while another
 * thread computes. */
#define WITHOUT_GIL(call) do { Py_BEGIN_ALLOW_THREADS call; Py_END_ALLOW_THREADS } while (0)

/* A Python method's result for a core call's status: None, or ACEError with the core's message. */
static PyObject *none_or_error(int32_t status) {
    if (status) return raise_core_error();
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ handles */

/* Encoders and trainers are the same Python object over an opaque core handle; they differ
 * only in the core function that frees the handle and in the word error messages use. The
 * type comes first, so an object's kind is its type: (HandleKind *)Py_TYPE(self). The core
 * serializes each handle's calls with its own lock; this side only owns the reference. */
typedef struct {
    PyTypeObject type;
    const char *what;            /* "encoder", "trainer" */
    void (*free)(void *);
} HandleKind;

typedef struct {
    PyObject_HEAD
    void *handle;                /* NULL until __init__ succeeds */
} HandleObject;

static HandleKind EncoderKind, TrainerKind;

static const HandleKind *kind_of(HandleObject *self) { return (const HandleKind *)Py_TYPE(self); }

/* self's core handle, or NULL with ACEError set. */
static void *handle_of(HandleObject *self) {
    if (!self->handle) PyErr_Format(ACEError, "%s is not initialized", kind_of(self)->what);
    return self->handle;
}

/* tp_init's end: a created handle replaces (and frees) the one self held; 0 or -1. */
static int init_handle(HandleObject *self, int32_t status, void *handle) {
    if (status) { raise_core_error(); return -1; }
    if (self->handle) kind_of(self)->free(self->handle);
    self->handle = handle;
    return 0;
}

/* A new Python object owning handle (freed if the object cannot be made), or ACEError. */
static PyObject *wrap_handle(HandleKind *kind, int32_t status, void *handle) {
    if (status) return raise_core_error();
    HandleObject *self = PyObject_New(HandleObject, &kind->type);
    if (!self) { kind->free(handle); return NULL; }
    self->handle = handle;
    return (PyObject *)self;
}

static void Handle_dealloc(HandleObject *self) {
    if (self->handle) kind_of(self)->free(self->handle);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ------------------------------------------------------------------ Encoder */

static int Encoder_init(HandleObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"preset", "in_chans", "img_size", "drop_path", "seed", NULL};
    const char *preset;
    int in_chans = 1, img_size = 224;
    float drop_path = 0.0f;
    unsigned long long seed = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "s|iifK", kwlist, &preset, &in_chans,
                                     &img_size, &drop_path, &seed))
        return -1;
    void *handle = NULL;
    int32_t status;
    WITHOUT_GIL(status = ace_encoder_create(preset, in_chans, img_size, drop_path, seed, &handle));
    return init_handle(self, status, handle);
}

static PyObject *Encoder_config_json(HandleObject *self, PyObject *unused) {
    void *h = handle_of(self);
    return h ? PyUnicode_FromString(ace_encoder_config(h)) : NULL;
}

/* save(path, preprocessing_json=None) */
static PyObject *Encoder_save(HandleObject *self, PyObject *args) {
    PyObject *path_obj;
    const char *preprocessing = NULL;
    void *h = handle_of(self);
    if (!h || !PyArg_ParseTuple(args, "O&|z", PyUnicode_FSConverter, &path_obj, &preprocessing)) return NULL;
    int32_t status;
    WITHOUT_GIL(status = ace_encoder_save(h, PyBytes_AS_STRING(path_obj), preprocessing));
    Py_DECREF(path_obj);
    return none_or_error(status);
}

/* [(name, shape tuple), ...] in the core's parameter order. */
static PyObject *Encoder_tensors(HandleObject *self, PyObject *unused) {
    void *h = handle_of(self);
    if (!h) return NULL;
    int32_t n = ace_encoder_num_tensors(h);
    PyObject *list = PyList_New(n);
    if (!list) return NULL;
    for (int32_t i = 0; i < n; i++) {
        const char *name;
        int32_t ndim;
        int64_t shape[4];
        if (ace_encoder_tensor_info(h, i, &name, &ndim, shape)) {
            Py_DECREF(list);
            return raise_core_error();
        }
        PyObject *dims = PyTuple_New(ndim);
        for (int32_t d = 0; d < ndim; d++) PyTuple_SET_ITEM(dims, d, PyLong_FromLongLong(shape[d]));
        PyList_SET_ITEM(list, i, Py_BuildValue("(sN)", name, dims));
    }
    return list;
}

static PyObject *Encoder_get_tensor(HandleObject *self, PyObject *args) {
    int index;
    void *h = handle_of(self);
    if (!h || !PyArg_ParseTuple(args, "i", &index)) return NULL;
    const char *name;
    int32_t ndim;
    int64_t shape[4];
    if (ace_encoder_tensor_info(h, index, &name, &ndim, shape)) return raise_core_error();
    npy_intp dims[4];
    for (int d = 0; d < ndim; d++) dims[d] = (npy_intp)shape[d];
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(ndim, dims, NPY_FLOAT32);
    if (!out) return NULL;
    int32_t status;
    WITHOUT_GIL(status = ace_encoder_get_tensor(h, index, PyArray_DATA(out), PyArray_SIZE(out)));
    if (status) {
        Py_DECREF(out);
        return raise_core_error();
    }
    return (PyObject *)out;
}

static PyObject *Encoder_set_tensor(HandleObject *self, PyObject *args) {
    int index;
    PyObject *obj;
    void *h = handle_of(self);
    if (!h || !PyArg_ParseTuple(args, "iO", &index, &obj)) return NULL;
    if (!PyArray_Check(obj) || PyArray_TYPE((PyArrayObject *)obj) != NPY_FLOAT32) {
        PyErr_SetString(ACEError, "tensor values must be a float32 NumPy array");
        return NULL;
    }
    PyArrayObject *arr = (PyArrayObject *)PyArray_FROM_OTF(obj, NPY_FLOAT32, NPY_ARRAY_IN_ARRAY);
    if (!arr) return NULL;
    int32_t status;
    WITHOUT_GIL(status = ace_encoder_set_tensor(h, index, PyArray_DATA(arr), PyArray_SIZE(arr)));
    Py_DECREF(arr);
    return none_or_error(status);
}

/* The core's calls that map images to an output buffer: forward_features, forward_train,
 * forward_attention. */
typedef int32_t (*ImageCall)(void *, const float *, int64_t, int64_t, int64_t, int64_t, float *, int64_t);

/* fn on x float32 (B, C, H, W) into out, a writable C-contiguous float32 array the caller
 * allocated (it knows the config), with the GIL released. The core checks every size. */
static PyObject *call_on_images(void *h, ImageCall fn, PyObject *xo, PyObject *oo) {
    if (!PyArray_Check(oo) || PyArray_TYPE((PyArrayObject *)oo) != NPY_FLOAT32 ||
        !PyArray_ISCARRAY((PyArrayObject *)oo)) {
        PyErr_SetString(ACEError, "out must be a writable C-contiguous float32 array");
        return NULL;
    }
    PyArrayObject *x = float_array(xo, 4, "input");
    if (!x) return NULL;
    PyArrayObject *out = (PyArrayObject *)oo;
    npy_intp *s = PyArray_DIMS(x);
    int32_t status;
    WITHOUT_GIL(status = fn(h, PyArray_DATA(x), s[0], s[1], s[2], s[3], PyArray_DATA(out), PyArray_SIZE(out)));
    Py_DECREF(x);
    return none_or_error(status);
}

/* forward_features(x, out[, train]): out float32 (B, 1 + h*w, embed_dim). train=True runs the
 * training forward (drop path, activations kept for backward). */
static PyObject *Encoder_forward_features(HandleObject *self, PyObject *args) {
    PyObject *xo, *oo;
    int train = 0;
    void *h = handle_of(self);
    if (!h || !PyArg_ParseTuple(args, "OO|p", &xo, &oo, &train)) return NULL;
    return call_on_images(h, train ? ace_encoder_forward_train : ace_encoder_forward_features, xo, oo);
}

/* forward_attention(x, out): out float32 (B, heads, 1 + h*w), the last block's attention of the
 * class token's query. */
static PyObject *Encoder_forward_attention(HandleObject *self, PyObject *args) {
    PyObject *xo, *oo;
    void *h = handle_of(self);
    if (!h || !PyArg_ParseTuple(args, "OO", &xo, &oo)) return NULL;
    return call_on_images(h, ace_encoder_forward_attention, xo, oo);
}

static PyObject *Encoder_backward(HandleObject *self, PyObject *args) {
    PyObject *go;
    void *h = handle_of(self);
    if (!h || !PyArg_ParseTuple(args, "O", &go)) return NULL;
    PyArrayObject *g = float_array(go, 3, "gradient");
    if (!g) return NULL;
    npy_intp *d = PyArray_DIMS(g);
    int32_t status;
    WITHOUT_GIL(status = ace_encoder_backward(h, PyArray_DATA(g), d[0], d[1], d[2]));
    Py_DECREF(g);
    return none_or_error(status);
}

static PyObject *Encoder_adamw_step(HandleObject *self, PyObject *args) {
    float lr, wd;
    void *h = handle_of(self);
    if (!h || !PyArg_ParseTuple(args, "ff", &lr, &wd)) return NULL;
    int32_t status;
    WITHOUT_GIL(status = ace_encoder_adamw_step(h, lr, wd));
    return none_or_error(status);
}

static PyObject *Encoder_set_precision(HandleObject *self, PyObject *args) {
    const char *setting;
    void *h = handle_of(self);
    if (!h || !PyArg_ParseTuple(args, "s", &setting)) return NULL;
    int32_t status;
    WITHOUT_GIL(status = ace_encoder_set_precision(h, setting));
    return none_or_error(status);
}

static PyObject *Encoder_precision(HandleObject *self, PyObject *unused) {
    void *h = handle_of(self);
    return h ? PyUnicode_FromString(ace_encoder_precision(h)) : NULL;
}

static PyMethodDef Encoder_methods[] = {
    {"set_precision", (PyCFunction)Encoder_set_precision, METH_VARARGS, "set_precision('auto' | 'bf16' | 'fp32')."},
    {"precision", (PyCFunction)Encoder_precision, METH_NOARGS, "The products' precision: 'bf16' or 'fp32'."},
    {"config_json", (PyCFunction)Encoder_config_json, METH_NOARGS, "The encoder's config as JSON."},
    {"save", (PyCFunction)Encoder_save, METH_VARARGS, "save(path, preprocessing_json=None): atomic safetensors write."},
    {"tensors", (PyCFunction)Encoder_tensors, METH_NOARGS, "[(name, shape)] of the parameters."},
    {"get_tensor", (PyCFunction)Encoder_get_tensor, METH_VARARGS, "get_tensor(i) -> float32 array (a copy)."},
    {"set_tensor", (PyCFunction)Encoder_set_tensor, METH_VARARGS, "set_tensor(i, float32 array)."},
    {"forward_features", (PyCFunction)Encoder_forward_features, METH_VARARGS,
     "forward_features(x float32 (B, C, H, W), out float32 (B, 1 + h*w, embed_dim), train=False)."},
    {"forward_attention", (PyCFunction)Encoder_forward_attention, METH_VARARGS,
     "forward_attention(x float32 (B, C, H, W), out float32 (B, heads, 1 + h*w))."},
    {"backward", (PyCFunction)Encoder_backward, METH_VARARGS, "backward(d_out float32 (B, 1 + h*w, C))."},
    {"adamw_step", (PyCFunction)Encoder_adamw_step, METH_VARARGS, "adamw_step(lr, weight_decay)."},
    {NULL}};

/* ------------------------------------------------------------------ Trainer */

/* The names of the values a step reports, in the core's order (ace_trainer_stat_names), as
 * Python strings: read once when the module loads. */
static PyObject *stat_names;

/* {name: value} of a step's ACE_TRAINER_STATS values. */
static PyObject *stats_dict(const double *stats) {
    PyObject *out = PyDict_New();
    for (int i = 0; out && i < ACE_TRAINER_STATS; i++) {
        PyObject *value = PyFloat_FromDouble(stats[i]);
        if (!value || PyDict_SetItem(out, PyTuple_GET_ITEM(stat_names, i), value) < 0) Py_CLEAR(out);
        Py_XDECREF(value);
    }
    return out;
}

/* The names from the core's comma-separated list; ImportError if their number is not the
 * header's ACE_TRAINER_STATS (a library and an extension from different builds). */
static PyObject *read_stat_names(void) {
    PyObject *text = PyUnicode_FromString(ace_trainer_stat_names());
    PyObject *list = text ? PyObject_CallMethod(text, "split", "s", ",") : NULL;
    Py_XDECREF(text);
    if (!list) return NULL;
    if (PyList_GET_SIZE(list) != ACE_TRAINER_STATS) {
        PyErr_Format(PyExc_ImportError, "libace_core.so reports %zd training statistics, ace.h declares %d: "
                     "the library and the extension come from different builds", PyList_GET_SIZE(list),
                     ACE_TRAINER_STATS);
        Py_DECREF(list);
        return NULL;
    }
    PyObject *names = PyList_AsTuple(list);
    Py_DECREF(list);
    return names;
}

static int Trainer_init(HandleObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"config_json", "seed", NULL};
    const char *json;
    unsigned long long seed = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "s|K", kwlist, &json, &seed)) return -1;
    void *handle = NULL;
    int32_t status;
    WITHOUT_GIL(status = ace_trainer_create(json, seed, &handle));
    return init_handle(self, status, handle);
}

static PyObject *Trainer_config_json(HandleObject *self, PyObject *unused) {
    void *h = handle_of(self);
    return h ? PyUnicode_FromString(ace_trainer_config(h)) : NULL;
}

/* save(path, run_state_json=None) */
static PyObject *Trainer_save(HandleObject *self, PyObject *args) {
    PyObject *path_obj;
    const char *run_state = NULL;
    void *h = handle_of(self);
    if (!h || !PyArg_ParseTuple(args, "O&|z", PyUnicode_FSConverter, &path_obj, &run_state)) return NULL;
    int32_t status;
    WITHOUT_GIL(status = ace_trainer_save(h, PyBytes_AS_STRING(path_obj), run_state));
    Py_DECREF(path_obj);
    return none_or_error(status);
}

/* step(images float32 (B, C, H, W)) -> stats dict. */
static PyObject *Trainer_step(HandleObject *self, PyObject *args) {
    PyObject *obj;
    void *h = handle_of(self);
    if (!h || !PyArg_ParseTuple(args, "O", &obj)) return NULL;
    PyArrayObject *x = float_array(obj, 4, "images");
    if (!x) return NULL;
    double stats[ACE_TRAINER_STATS];
    npy_intp *s = PyArray_DIMS(x);
    int32_t status;
    WITHOUT_GIL(status = ace_trainer_step(h, PyArray_DATA(x), s[0], s[1], s[2], s[3], stats));
    Py_DECREF(x);
    return status ? raise_core_error() : stats_dict(stats);
}

/* compute_gradients(images float32 (B, C, H, W), first_image) -> stats dict (the loss terms). */
static PyObject *Trainer_compute_gradients(HandleObject *self, PyObject *args) {
    PyObject *obj;
    long long first = 0;
    void *h = handle_of(self);
    if (!h || !PyArg_ParseTuple(args, "OL", &obj, &first)) return NULL;
    PyArrayObject *x = float_array(obj, 4, "images");
    if (!x) return NULL;
    double stats[ACE_TRAINER_STATS];
    npy_intp *s = PyArray_DIMS(x);
    int32_t status;
    WITHOUT_GIL(status = ace_trainer_compute_gradients(h, PyArray_DATA(x), s[0], s[1], s[2], s[3], first, stats));
    Py_DECREF(x);
    return status ? raise_core_error() : stats_dict(stats);
}

static PyObject *Trainer_apply_gradients(HandleObject *self, PyObject *unused) {
    void *h = handle_of(self);
    if (!h) return NULL;
    double stats[ACE_TRAINER_STATS];
    int32_t status;
    WITHOUT_GIL(status = ace_trainer_apply_gradients(h, stats));
    return status ? raise_core_error() : stats_dict(stats);
}

/* buffer(0 gradients | 1 center statistic) -> writable float32 array over the core's memory,
 * no copy; the array holds a reference to the trainer, so the memory outlives it. */
static PyObject *Trainer_buffer(HandleObject *self, PyObject *args) {
    int which;
    void *h = handle_of(self);
    if (!h || !PyArg_ParseTuple(args, "i", &which)) return NULL;
    float *data = NULL;
    int64_t count = 0;
    if (ace_trainer_buffer(h, which, &data, &count)) return raise_core_error();
    npy_intp n = (npy_intp)count;
    PyObject *array = PyArray_SimpleNewFromData(1, &n, NPY_FLOAT32, data);
    if (!array) return NULL;
    Py_INCREF(self);
    if (PyArray_SetBaseObject((PyArrayObject *)array, (PyObject *)self) < 0) {
        Py_DECREF(array);
        return NULL;
    }
    return array;
}

static PyObject *Trainer_steps(HandleObject *self, PyObject *unused) {
    void *h = handle_of(self);
    if (!h) return NULL;
    int64_t steps;
    WITHOUT_GIL(steps = ace_trainer_steps(h));
    return PyLong_FromLongLong(steps);
}

static PyObject *Trainer_encoder(HandleObject *self, PyObject *args) {
    int which;
    void *h = handle_of(self);
    if (!h || !PyArg_ParseTuple(args, "i", &which)) return NULL;
    void *handle = NULL;
    int32_t status = ace_trainer_encoder(h, which, &handle);
    return wrap_handle(&EncoderKind, status, handle);
}

static PyMethodDef Trainer_methods[] = {
    {"config_json", (PyCFunction)Trainer_config_json, METH_NOARGS, "The run's config as JSON."},
    {"save", (PyCFunction)Trainer_save, METH_VARARGS,
     "save(path, run_state_json=None): the whole run, atomically; run_state_json goes in the metadata."},
    {"step", (PyCFunction)Trainer_step, METH_VARARGS, "step(images float32 (B, C, H, W)) -> stats dict."},
    {"steps", (PyCFunction)Trainer_steps, METH_NOARGS, "Steps taken so far."},
    {"compute_gradients", (PyCFunction)Trainer_compute_gradients, METH_VARARGS,
     "compute_gradients(images float32 (B, C, H, W), first_image) -> stats dict (loss terms)."},
    {"apply_gradients", (PyCFunction)Trainer_apply_gradients, METH_NOARGS, "apply_gradients() -> stats dict."},
    {"buffer", (PyCFunction)Trainer_buffer, METH_VARARGS,
     "buffer(0 gradients | 1 center statistic) -> float32 array sharing the core's memory."},
    {"encoder", (PyCFunction)Trainer_encoder, METH_VARARGS,
     "encoder(0 student | 1 teacher) -> Encoder sharing weights."},
    {NULL}};

#define HANDLE_TYPE(NAME, DOC, INIT, METHODS)                                      \
    {                                                                              \
        PyVarObject_HEAD_INIT(NULL, 0)                                             \
        .tp_name = "ace._native." NAME, .tp_basicsize = sizeof(HandleObject),      \
        .tp_flags = Py_TPFLAGS_DEFAULT, .tp_doc = DOC, .tp_new = PyType_GenericNew, \
        .tp_init = (initproc)INIT, .tp_dealloc = (destructor)Handle_dealloc,       \
        .tp_methods = METHODS,                                                     \
    }

static HandleKind EncoderKind = {
    HANDLE_TYPE("Encoder", "Encoder(preset, in_chans=1, img_size=224, drop_path=0.0, seed=0): a native ViT.",
                Encoder_init, Encoder_methods),
    "encoder", ace_encoder_free};
static HandleKind TrainerKind = {
    HANDLE_TYPE("Trainer", "Trainer(config_json, seed=0): a native pretraining run.", Trainer_init, Trainer_methods),
    "trainer", ace_trainer_free};

/* ------------------------------------------------------------------ module */

/* load_encoder(path) / load_trainer(path): a handle read from a safetensors file. */
static PyObject *load_handle(HandleKind *kind, int32_t (*load)(const char *, void **), PyObject *args) {
    PyObject *path_obj;
    if (!PyArg_ParseTuple(args, "O&", PyUnicode_FSConverter, &path_obj)) return NULL;
    void *handle = NULL;
    int32_t status;
    WITHOUT_GIL(status = load(PyBytes_AS_STRING(path_obj), &handle));
    Py_DECREF(path_obj);
    return wrap_handle(kind, status, handle);
}

static PyObject *load_encoder(PyObject *mod, PyObject *args) {
    return load_handle(&EncoderKind, ace_encoder_load, args);
}

static PyObject *load_trainer(PyObject *mod, PyObject *args) {
    return load_handle(&TrainerKind, ace_trainer_load, args);
}

static PyObject *encoder_from_json(PyObject *mod, PyObject *args) {
    const char *json;
    unsigned long long seed = 0;
    if (!PyArg_ParseTuple(args, "s|K", &json, &seed)) return NULL;
    void *handle = NULL;
    int32_t status;
    WITHOUT_GIL(status = ace_encoder_create_from_json(json, seed, &handle));
    return wrap_handle(&EncoderKind, status, handle);
}

/* The data of a writable C-contiguous array of the given dtype; its element count goes to *len. */
static void *out_buffer(PyObject *obj, int type, const char *what, int64_t *len) {
    if (!PyArray_Check(obj) || PyArray_TYPE((PyArrayObject *)obj) != type ||
        !PyArray_ISCARRAY((PyArrayObject *)obj)) {
        PyErr_Format(ACEError, "%s must be a writable C-contiguous array of the right dtype", what);
        return NULL;
    }
    *len = PyArray_SIZE((PyArrayObject *)obj);
    return PyArray_DATA((PyArrayObject *)obj);
}

/* grid_crops(config_json, seed, count, boxes, o1, o2, t_comp, t_decomp, image, views1, views2):
 * fills the caller's arrays (sized by ace.crops from the config; the core checks every
 * length); image/views may be None. */
static PyObject *grid_crops(PyObject *mod, PyObject *args) {
    const char *json;
    unsigned long long seed;
    long long count;
    PyObject *bo, *o1o, *o2o, *tco, *tdo, *imo, *v1o, *v2o;
    if (!PyArg_ParseTuple(args, "sKLOOOOOOOO", &json, &seed, &count, &bo, &o1o, &o2o, &tco, &tdo,
                          &imo, &v1o, &v2o))
        return NULL;
    int64_t len[8] = {0};
    void *boxes, *o1, *o2, *tc, *td;
    if (!(boxes = out_buffer(bo, NPY_INT32, "boxes", &len[0])) || !(o1 = out_buffer(o1o, NPY_UINT8, "o1", &len[1])) ||
        !(o2 = out_buffer(o2o, NPY_UINT8, "o2", &len[2])) || !(tc = out_buffer(tco, NPY_FLOAT32, "t_comp", &len[3])) ||
        !(td = out_buffer(tdo, NPY_FLOAT32, "t_decomp", &len[4])))
        return NULL;
    float *image = NULL, *v1 = NULL, *v2 = NULL;
    if (imo != Py_None) {
        if (!(image = out_buffer(imo, NPY_FLOAT32, "image", &len[5])) ||
            !(v1 = out_buffer(v1o, NPY_FLOAT32, "views1", &len[6])) ||
            !(v2 = out_buffer(v2o, NPY_FLOAT32, "views2", &len[7])))
            return NULL;
    }
    int32_t status;
    WITHOUT_GIL(status = ace_grid_crops(json, seed, count, boxes, o1, o2, tc, td, image, v1, v2, len));
    return none_or_error(status);
}

/* resize(src float32 (N, H, W), out float32 (N, h, w)): the core's resampler, into out. */
static PyObject *resize(PyObject *mod, PyObject *args) {
    PyObject *so, *oo;
    if (!PyArg_ParseTuple(args, "OO", &so, &oo)) return NULL;
    PyArrayObject *src = float_array(so, 3, "images");
    if (!src) return NULL;
    PyArrayObject *out = (PyArrayObject *)oo;
    if (!PyArray_Check(oo) || PyArray_TYPE(out) != NPY_FLOAT32 || PyArray_NDIM(out) != 3 ||
        !PyArray_IS_C_CONTIGUOUS(out) || PyArray_DIM(out, 0) != PyArray_DIM(src, 0)) {
        Py_DECREF(src);
        PyErr_SetString(ACEError, "resize: out must be a C-contiguous float32 (N, h, w) array with N images");
        return NULL;
    }
    npy_intp *s = PyArray_DIMS(src), *o = PyArray_DIMS(out);
    int32_t status;
    WITHOUT_GIL(status = ace_resize(PyArray_DATA(src), s[0], s[1], s[2], PyArray_DATA(out), o[1], o[2]));
    Py_DECREF(src);
    return none_or_error(status);
}

static PyObject *set_num_threads(PyObject *mod, PyObject *args) {
    int n;
    if (!PyArg_ParseTuple(args, "i", &n)) return NULL;
    if (ace_set_num_threads(n)) return raise_core_error();
    Py_RETURN_NONE;
}

static PyObject *precision_info(PyObject *mod, PyObject *unused) {
    return PyUnicode_FromString(ace_precision_info());
}

static PyObject *pretrain_config_defaults(PyObject *mod, PyObject *unused) {
    return PyUnicode_FromString(ace_pretrain_config_defaults());
}

static PyObject *swin_geometry(PyObject *mod, PyObject *unused) {
    return PyUnicode_FromString(ace_swin_geometry());
}

static PyObject *presets(PyObject *mod, PyObject *unused) {
    return PyUnicode_FromString(ace_presets());
}

static PyObject *get_num_threads(PyObject *mod, PyObject *unused) {
    return PyLong_FromLong(ace_get_num_threads());
}

/* gemm(a, b, trans_a, trans_b, precision="fp32") -> op(a) @ op(b) through the core's products. */
static PyObject *gemm(PyObject *mod, PyObject *args) {
    PyObject *ao, *bo;
    int ta = 0, tb = 0;
    const char *precision = "fp32";
    if (!PyArg_ParseTuple(args, "OO|pps", &ao, &bo, &ta, &tb, &precision)) return NULL;
    PyArrayObject *a = float_array(ao, 2, "a");
    if (!a) return NULL;
    PyArrayObject *b = float_array(bo, 2, "b");
    if (!b) { Py_DECREF(a); return NULL; }
    npy_intp m = PyArray_DIM(a, ta ? 1 : 0), k = PyArray_DIM(a, ta ? 0 : 1);
    npy_intp kb = PyArray_DIM(b, tb ? 1 : 0), n = PyArray_DIM(b, tb ? 0 : 1);
    PyArrayObject *c = NULL;
    if (k != kb) {
        PyErr_Format(ACEError, "gemm: inner dimensions differ (%zd vs %zd)", (Py_ssize_t)k, (Py_ssize_t)kb);
    } else {
        npy_intp dims[2] = {m, n};
        c = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32);
        if (c) {
            int32_t status;
            WITHOUT_GIL(status = ace_gemm(ta, tb, m, n, k, PyArray_DATA(a), PyArray_DATA(b), PyArray_DATA(c),
                                          precision));
            if (status) { Py_CLEAR(c); raise_core_error(); }
        }
    }
    Py_DECREF(a);
    Py_DECREF(b);
    return (PyObject *)c;
}

/* local_match_loss(teacher (B,N,C), z (B,Nz,C), targets (B,N,Nz), alpha, scale)
 * -> (loss, accuracy, dz). */
static PyObject *local_match_loss(PyObject *mod, PyObject *args) {
    PyObject *to, *zo, *go;
    float alpha, scale;
    if (!PyArg_ParseTuple(args, "OOOff", &to, &zo, &go, &alpha, &scale)) return NULL;
    PyArrayObject *t = float_array(to, 3, "teacher"), *z = NULL, *g = NULL, *dz = NULL;
    PyObject *result = NULL;
    if (!t || !(z = float_array(zo, 3, "z")) || !(g = float_array(go, 3, "targets"))) goto done;
    npy_intp b = PyArray_DIM(t, 0), n = PyArray_DIM(t, 1), c = PyArray_DIM(t, 2), nz = PyArray_DIM(z, 1);
    if (PyArray_DIM(z, 0) != b || PyArray_DIM(z, 2) != c || PyArray_DIM(g, 0) != b ||
        PyArray_DIM(g, 1) != n || PyArray_DIM(g, 2) != nz) {
        PyErr_SetString(ACEError, "local_match_loss: shapes must be (B, N, C), (B, Nz, C), (B, N, Nz)");
        goto done;
    }
    dz = (PyArrayObject *)PyArray_SimpleNew(3, PyArray_DIMS(z), NPY_FLOAT32);
    if (!dz) goto done;
    double loss = 0, accuracy = 0;
    int32_t status;
    WITHOUT_GIL(status = ace_local_match_loss(PyArray_DATA(t), PyArray_DATA(z), PyArray_DATA(g), b, n, nz, c,
                                              alpha, scale, &loss, &accuracy, PyArray_DATA(dz)));
    if (status) {
        raise_core_error();
        goto done;
    }
    result = Py_BuildValue("(ddO)", loss, accuracy, dz);
done:
    Py_XDECREF(t);
    Py_XDECREF(z);
    Py_XDECREF(g);
    Py_XDECREF(dz);
    return result;
}

static PyMethodDef module_methods[] = {
    {"local_match_loss", local_match_loss, METH_VARARGS,
     "local_match_loss(teacher, z, targets, alpha, scale) -> (loss, accuracy, dz)"},
    {"load_encoder", load_encoder, METH_VARARGS, "load_encoder(path) -> Encoder"},
    {"load_trainer", load_trainer, METH_VARARGS, "load_trainer(path) -> Trainer"},
    {"grid_crops", grid_crops, METH_VARARGS, "grid_crops(config_json, seed, count, buffers...)"},
    {"encoder_from_json", encoder_from_json, METH_VARARGS, "encoder_from_json(json, seed=0) -> Encoder"},
    {"set_num_threads", set_num_threads, METH_VARARGS, "Threads for BLAS and the core's kernels."},
    {"precision_info", precision_info, METH_NOARGS, "JSON: what 'auto' precision means on this machine."},
    {"get_num_threads", get_num_threads, METH_NOARGS, "Threads for BLAS and the core's kernels."},
    {"pretrain_config_defaults", pretrain_config_defaults, METH_NOARGS, "JSON: every PretrainConfig default."},
    {"presets", presets, METH_NOARGS, "JSON: the encoder presets, name -> width, depth(s), heads."},
    {"swin_geometry", swin_geometry, METH_NOARGS, "JSON: the pretraining settings a Swin encoder changes."},
    {"resize", resize, METH_VARARGS, "resize(images (N,H,W), out (N,h,w)): the core's resampler"},
    {"gemm", gemm, METH_VARARGS, "gemm(a, b, trans_a=False, trans_b=False, precision='fp32') -> op(a) @ op(b)"},
    {NULL}};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "ace._native", NULL, -1, module_methods};

PyMODINIT_FUNC PyInit__native(void) {
    import_array();
    PyObject *errors = PyImport_ImportModule("ace.errors");
    if (!errors) return NULL;
    ACEError = PyObject_GetAttrString(errors, "ACEError");
    Py_DECREF(errors);
    if (!ACEError) return NULL;
    if (PyType_Ready(&EncoderKind.type) < 0 || PyType_Ready(&TrainerKind.type) < 0) return NULL;
    if (!(stat_names = read_stat_names())) return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (!m) return NULL;
    Py_INCREF(&EncoderKind.type);
    PyModule_AddObject(m, "Encoder", (PyObject *)&EncoderKind.type);
    Py_INCREF(&TrainerKind.type);
    PyModule_AddObject(m, "Trainer", (PyObject *)&TrainerKind.type);
    Py_INCREF(stat_names);
    PyModule_AddObject(m, "STAT_NAMES", stat_names);
    return m;
}

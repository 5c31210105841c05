/* modelpod.codecs._fastjson: the plain v2 JSON inputs -> numpy arrays, in C.
 *
 * The accelerated half of modelpod.codecs.v2.plain_inputs. It answers only what it is sure of:
 * a dict of arrays when the request is plain (see plain_inputs in v2.py) and every tensor is a
 * rectangular list of JSON numbers for FP32, FP64, INT32 or INT64 that converts exactly as the
 * Python path converts it; None in every other case, and the Python function then decides (it
 * is the reference: this code may only ever say "same answer, sooner").
 *
 * Built as an optional extension (setup.py); without a compiler the Python path runs alone.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

#define MAX_DIMS 32
/* ints past 2**53 would round twice on the way to float32 (int -> double -> float): the Python
 * path converts them once, so they are left to it */
#define EXACT_INT (1LL << 53)
/* the Python path's bound on any declared shape (datatypes.MAX_ELEMENTS) */
#define MAX_ELEMENTS (1LL << 48)

static PyObject *s_inputs, *s_name, *s_datatype, *s_shape, *s_data;
static PyObject *s_FP32, *s_FP64, *s_INT32, *s_INT64;

/* The numpy type of a v2 datatype this module converts, or -1 (borrowed str). */
static int
type_of(PyObject *datatype)
{
    if (datatype == s_FP32 || PyUnicode_Compare(datatype, s_FP32) == 0) return NPY_FLOAT32;
    if (PyUnicode_Compare(datatype, s_FP64) == 0) return NPY_FLOAT64;
    if (PyUnicode_Compare(datatype, s_INT32) == 0) return NPY_INT32;
    if (PyUnicode_Compare(datatype, s_INT64) == 0) return NPY_INT64;
    return -1;
}

/* The dims of rectangular nested lists, found down the first elements; 0 = not handled. */
static int
data_dims(PyObject *data, npy_intp *dims, int *ndim)
{
    int n = 0;
    PyObject *level = data;
    while (PyList_CheckExact(level)) {
        if (n == MAX_DIMS) return 0;
        Py_ssize_t len = PyList_GET_SIZE(level);
        if (len == 0) return 0; /* empty data: the Python path says what it means */
        dims[n++] = len;
        level = PyList_GET_ITEM(level, 0);
    }
    *ndim = n;
    return n > 0;
}

/* Write the leaves of ``data`` (depth ``depth`` of ``ndim``) at ``*at``; 0 = not handled. */
static int
fill(PyObject *data, const npy_intp *dims, int depth, int ndim, int type, char **at)
{
    Py_ssize_t len = PyList_GET_SIZE(data);
    if (len != dims[depth]) return 0; /* ragged */
    PyObject **items = ((PyListObject *)data)->ob_item;
    if (depth + 1 < ndim) {
        for (Py_ssize_t i = 0; i < len; i++) {
            if (!PyList_CheckExact(items[i]) || !fill(items[i], dims, depth + 1, ndim, type, at)) return 0;
        }
        return 1;
    }
    for (Py_ssize_t i = 0; i < len; i++) {
        PyObject *v = items[i];
        double d;
        long long k;
        if (PyFloat_CheckExact(v)) {
            if (type == NPY_INT32 || type == NPY_INT64) return 0; /* a fraction (or not) for ints: Python says */
            d = PyFloat_AS_DOUBLE(v);
        } else if (PyLong_CheckExact(v)) { /* exact: bools are not numbers here */
            int overflow = 0;
            k = PyLong_AsLongLongAndOverflow(v, &overflow);
            if (overflow || (k == -1 && PyErr_Occurred())) {
                PyErr_Clear();
                return 0;
            }
            if (type == NPY_INT64) {
                *(npy_int64 *)*at = (npy_int64)k;
                *at += sizeof(npy_int64);
                continue;
            }
            if (type == NPY_INT32) {
                if (k < INT32_MIN || k > INT32_MAX) return 0; /* out of range: Python's message */
                *(npy_int32 *)*at = (npy_int32)k;
                *at += sizeof(npy_int32);
                continue;
            }
            if (k > EXACT_INT || k < -EXACT_INT) return 0;
            d = (double)k;
        } else {
            return 0;
        }
        if (type == NPY_FLOAT32) {
            *(npy_float32 *)*at = (npy_float32)d;
            *at += sizeof(npy_float32);
        } else {
            *(npy_float64 *)*at = d;
            *at += sizeof(npy_float64);
        }
    }
    return 1;
}

/* The array of one tensor (new reference); NULL without an error set = not handled. */
static PyObject *
to_array(PyObject *data, PyObject *shape, int type)
{
    npy_intp dims[MAX_DIMS], want[MAX_DIMS];
    int ndim = 0;
    if (!PyList_CheckExact(data) || !data_dims(data, dims, &ndim)) return NULL;
    Py_ssize_t rank = PyList_GET_SIZE(shape);
    if (rank < 1 || rank > MAX_DIMS) return NULL;
    long long count = 1, have = 1;
    for (Py_ssize_t i = 0; i < rank; i++) {
        PyObject *dim = PyList_GET_ITEM(shape, i);
        if (!PyLong_CheckExact(dim)) return NULL;
        int overflow = 0;
        long long d = PyLong_AsLongLongAndOverflow(dim, &overflow);
        if (overflow || d <= 0 || d > MAX_ELEMENTS) { /* zero dims and errors: the Python path */
            PyErr_Clear();
            return NULL;
        }
        count *= d;
        if (count > MAX_ELEMENTS) return NULL;
        want[i] = (npy_intp)d;
    }
    for (int i = 0; i < ndim; i++) {
        have *= dims[i];
        if (have > MAX_ELEMENTS) return NULL;
    }
    if (have != count) return NULL; /* the shape does not fit: the Python path words it */
    PyObject *array = PyArray_SimpleNew((int)rank, want, type);
    if (array == NULL) return NULL; /* MemoryError stays set */
    char *at = PyArray_BYTES((PyArrayObject *)array);
    if (!fill(data, dims, 0, ndim, type, &at)) {
        Py_DECREF(array);
        return NULL;
    }
    return array;
}

/* A borrowed item of an exact dict, or NULL (no error) when absent. */
static inline PyObject *
item_of(PyObject *dict, PyObject *key)
{
    PyObject *v = PyDict_GetItemWithError(dict, key);
    if (v == NULL) PyErr_Clear();
    return v;
}

static PyObject *
plain_inputs(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "plain_inputs(doc, datatypes)");
        return NULL;
    }
    PyObject *doc = args[0], *datatypes = args[1];
    if (!PyDict_CheckExact(doc) || PyDict_GET_SIZE(doc) != 1 || !PyDict_CheckExact(datatypes)) Py_RETURN_NONE;
    PyObject *items = item_of(doc, s_inputs);
    if (items == NULL || !PyList_CheckExact(items)) Py_RETURN_NONE;
    Py_ssize_t n = PyList_GET_SIZE(items);
    if (n == 0 || n != PyDict_GET_SIZE(datatypes)) Py_RETURN_NONE;
    for (Py_ssize_t i = 0; i < n; i++) { /* the whole structure first, as the Python path */
        PyObject *item = PyList_GET_ITEM(items, i);
        if (!PyDict_CheckExact(item) || PyDict_GET_SIZE(item) != 4) Py_RETURN_NONE;
        PyObject *name = item_of(item, s_name);
        if (name == NULL || !PyUnicode_CheckExact(name)) Py_RETURN_NONE;
        PyObject *want = item_of(datatypes, name);
        PyObject *got = item_of(item, s_datatype);
        if (want == NULL || got == NULL || !PyUnicode_CheckExact(want) || !PyUnicode_CheckExact(got)
                || PyUnicode_Compare(want, got) != 0) Py_RETURN_NONE;
        PyObject *shape = item_of(item, s_shape);
        PyObject *data = item_of(item, s_data);
        if (shape == NULL || !PyList_CheckExact(shape) || data == NULL || data == Py_None) Py_RETURN_NONE;
    }
    PyObject *out = PyDict_New();
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        PyObject *name = item_of(item, s_name);
        int type = type_of(item_of(item, s_datatype));
        if (type < 0 || PyDict_Contains(out, name)) goto not_handled;
        PyObject *array = to_array(item_of(item, s_data), item_of(item, s_shape), type);
        if (array == NULL) {
            if (PyErr_Occurred()) goto failed;
            goto not_handled;
        }
        int set = PyDict_SetItem(out, name, array);
        Py_DECREF(array);
        if (set < 0) goto failed;
    }
    return out;
not_handled:
    Py_DECREF(out);
    Py_RETURN_NONE;
failed:
    Py_DECREF(out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"plain_inputs", (PyCFunction)(void (*)(void))plain_inputs, METH_FASTCALL,
     "plain_inputs(doc, datatypes) -> dict of arrays, or None: the Python plain_inputs decides"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_fastjson",
    "The plain v2 JSON inputs -> numpy arrays in C (see modelpod.codecs.v2.plain_inputs).", -1, methods,
};

PyMODINIT_FUNC
PyInit__fastjson(void)
{
    import_array();
    s_inputs = PyUnicode_InternFromString("inputs");
    s_name = PyUnicode_InternFromString("name");
    s_datatype = PyUnicode_InternFromString("datatype");
    s_shape = PyUnicode_InternFromString("shape");
    s_data = PyUnicode_InternFromString("data");
    s_FP32 = PyUnicode_InternFromString("FP32");
    s_FP64 = PyUnicode_InternFromString("FP64");
    s_INT32 = PyUnicode_InternFromString("INT32");
    s_INT64 = PyUnicode_InternFromString("INT64");
    if (!s_inputs || !s_name || !s_datatype || !s_shape || !s_data || !s_FP32 || !s_FP64 || !s_INT32 || !s_INT64)
        return NULL;
    return PyModule_Create(&module_def);
}

/* modelpod._fastspec: the all-good case of a spec check, in C.
 *
 * The accelerated half of modelpod.spec's straight-line check. ``check_arrays(plan, tensors,
 * bindings)`` returns the dict of arrays when ``tensors`` is exactly the spec's names with numpy
 * arrays of the spec's dtypes, ranks and sizes (symbols agreeing with ``bindings`` and each other),
 * and records each new symbol in ``bindings`` as (size, first tensor that uses it). In every other
 * case it changes nothing and returns None: the general check in Python then converts or says
 * what is wrong (it is the reference: this code may only ever say "same answer, sooner").
 *
 * ``plan`` (built by modelpod.spec): (entries, symbols), entries a tuple of (name, dtype, rank,
 * dims) with dims a tuple of (axis, is_symbol, size or symbol index), symbols a tuple of
 * (symbol, first user). Built as an optional extension (setup.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

#define MAX_SYMBOLS 64

static PyObject *
check_arrays(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "check_arrays(plan, tensors, bindings)");
        return NULL;
    }
    PyObject *plan = args[0], *tensors = args[1], *bindings = args[2];
    if (!PyTuple_CheckExact(plan) || PyTuple_GET_SIZE(plan) != 2) {
        PyErr_SetString(PyExc_TypeError, "check_arrays: plan must be (entries, symbols)");
        return NULL;
    }
    PyObject *entries = PyTuple_GET_ITEM(plan, 0), *symbols = PyTuple_GET_ITEM(plan, 1);
    if (!PyTuple_CheckExact(entries) || !PyTuple_CheckExact(symbols)) {
        PyErr_SetString(PyExc_TypeError, "check_arrays: plan must be (entries, symbols)");
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(entries), nsym = PyTuple_GET_SIZE(symbols);
    if (!PyDict_CheckExact(tensors) || PyDict_GET_SIZE(tensors) != n || nsym > MAX_SYMBOLS
            || (bindings != Py_None && !PyDict_CheckExact(bindings))) Py_RETURN_NONE;

    npy_intp size[MAX_SYMBOLS];
    char bound[MAX_SYMBOLS];
    for (Py_ssize_t i = 0; i < nsym; i++) {
        size[i] = -1;
        bound[i] = 0;
        if (bindings == Py_None) continue;
        PyObject *symbol = PyTuple_GET_ITEM(PyTuple_GET_ITEM(symbols, i), 0);
        PyObject *b = PyDict_GetItemWithError(bindings, symbol);
        if (b == NULL) {
            if (PyErr_Occurred()) return NULL;
            continue;
        }
        if (!PyTuple_CheckExact(b) || PyTuple_GET_SIZE(b) < 1 || !PyLong_CheckExact(PyTuple_GET_ITEM(b, 0)))
            Py_RETURN_NONE; /* not what a check records: the general check decides */
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(PyTuple_GET_ITEM(b, 0), &overflow);
        if (overflow || v < 0) Py_RETURN_NONE;
        size[i] = (npy_intp)v;
        bound[i] = 1;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *entry = PyTuple_GET_ITEM(entries, k);
        PyObject *t = PyDict_GetItemWithError(tensors, PyTuple_GET_ITEM(entry, 0));
        if (t == NULL) {
            if (PyErr_Occurred()) return NULL;
            Py_RETURN_NONE;
        }
        if (Py_TYPE(t) != &PyArray_Type || (PyObject *)PyArray_DESCR((PyArrayObject *)t) != PyTuple_GET_ITEM(entry, 1))
            Py_RETURN_NONE;
        int ndim = PyArray_NDIM((PyArrayObject *)t);
        if (ndim != PyLong_AsLong(PyTuple_GET_ITEM(entry, 2))) Py_RETURN_NONE;
        npy_intp *shape = PyArray_DIMS((PyArrayObject *)t);
        PyObject *dims = PyTuple_GET_ITEM(entry, 3);
        for (Py_ssize_t d = 0; d < PyTuple_GET_SIZE(dims); d++) {
            PyObject *dim = PyTuple_GET_ITEM(dims, d);
            long axis = PyLong_AsLong(PyTuple_GET_ITEM(dim, 0));
            long value = PyLong_AsLong(PyTuple_GET_ITEM(dim, 2));
            if (axis < 0 || axis >= ndim) Py_RETURN_NONE;
            npy_intp s = shape[axis];
            if (PyTuple_GET_ITEM(dim, 1) != Py_True) { /* a fixed size */
                if (s != value) Py_RETURN_NONE;
                continue;
            }
            if (value < 0 || value >= nsym) Py_RETURN_NONE;
            if (size[value] < 0) size[value] = s;
            else if (s != size[value]) Py_RETURN_NONE;
        }
    }
    PyObject *result = PyDict_New();
    if (result == NULL) return NULL;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *name = PyTuple_GET_ITEM(PyTuple_GET_ITEM(entries, k), 0);
        PyObject *t = PyDict_GetItemWithError(tensors, name);
        if (t == NULL || PyDict_SetItem(result, name, t) < 0) {
            Py_DECREF(result);
            return NULL;
        }
    }
    if (bindings != Py_None) {
        for (Py_ssize_t i = 0; i < nsym; i++) {
            if (bound[i]) continue;
            PyObject *symbol = PyTuple_GET_ITEM(symbols, i);
            PyObject *value = Py_BuildValue("(nO)", (Py_ssize_t)size[i], PyTuple_GET_ITEM(symbol, 1));
            if (value == NULL || PyDict_SetItem(bindings, PyTuple_GET_ITEM(symbol, 0), value) < 0) {
                Py_XDECREF(value);
                Py_DECREF(result);
                return NULL;
            }
            Py_DECREF(value);
        }
    }
    return result;
}

static PyMethodDef methods[] = {
    {"check_arrays", (PyCFunction)(void (*)(void))check_arrays, METH_FASTCALL,
     "check_arrays(plan, tensors, bindings) -> dict of arrays, or None: the general check decides"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_fastspec", "The all-good case of a spec check in C (see modelpod.spec).", -1, methods,
};

PyMODINIT_FUNC
PyInit__fastspec(void)
{
    import_array();
    return PyModule_Create(&module_def);
}

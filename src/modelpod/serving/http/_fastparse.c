/* modelpod.serving.http._fastparse: one whole, simple HTTP/1.x request parsed in one C call.
 *
 * The accelerated half of HttpProtocol.data_received. httptools (llhttp) parses through a Python
 * callback per URL, header, body piece and message; most requests of an inference client arrive
 * whole in one read and are as plain as HTTP gets, and this parses those in one call. It accepts
 * a strict subset of HTTP/1.1 only, where every parser reads the same request:
 *
 *   METHOD SP origin-form-target SP HTTP/1.1|HTTP/1.0 CRLF, then name ":" OWS value CRLF lines,
 *   CRLF, then exactly Content-Length body bytes (none without one).
 *
 * with a known method, a target of visible ASCII without '#', tchar names, values of visible
 * ASCII, spaces and tabs (no obs-text; a value ending in a space or tab is declined, since
 * httptools keeps such spaces), each name once, Content-Length plain
 * digits, Connection only "close" or "keep-alive"; no Transfer-Encoding, Upgrade, Expect or
 * Proxy-Connection; and within the limits (head bytes, header lines, body bytes). For anything
 * else - incomplete, unusual, malformed, too large - it returns None and httptools parses the
 * bytes as before (and words the 4xx). It only ever reads inside the bytes object it is given.
 *
 * Built as an optional extension (setup.py); without a compiler httptools parses everything.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define MAX_NAME 256

static PyObject *methods[7];
static const char *method_names[7] = {"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"};

/* RFC 9110 tchar */
static unsigned char tchar[256];

static void
init_tables(void)
{
    const char *extra = "!#$%&'*+-.^_`|~";
    for (int c = '0'; c <= '9'; c++) tchar[c] = 1;
    for (int c = 'a'; c <= 'z'; c++) tchar[c] = 1;
    for (int c = 'A'; c <= 'Z'; c++) tchar[c] = 1;
    for (const char *e = extra; *e; e++) tchar[(unsigned char)*e] = 1;
}

static inline int
is_name(const char *lower, Py_ssize_t n, const char *word)
{
    return (Py_ssize_t)strlen(word) == n && memcmp(lower, word, (size_t)n) == 0;
}

static inline int
value_is(const char *v, Py_ssize_t n, const char *word)
{
    if ((Py_ssize_t)strlen(word) != n) return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = v[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        if (c != word[i]) return 0;
    }
    return 1;
}

static PyObject *
parse_request(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "parse_request(data, offset, max_head, max_headers, max_body)");
        return NULL;
    }
    if (!PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "parse_request: data must be bytes");
        return NULL;
    }
    Py_ssize_t numbers[4]; /* offset, max_head, max_headers, max_body */
    for (int i = 0; i < 4; i++) {
        if (!PyLong_Check(args[i + 1])) {
            PyErr_SetString(PyExc_TypeError, "parse_request: offset and limits must be ints");
            return NULL;
        }
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(args[i + 1], &overflow);
        if (v == -1 && PyErr_Occurred()) return NULL;
        /* past what a C size holds: an offset past any data, a limit nothing reaches */
        numbers[i] = overflow < 0 ? -1 : (overflow > 0 || v > PY_SSIZE_T_MAX) ? PY_SSIZE_T_MAX : (Py_ssize_t)v;
    }
    Py_ssize_t offset = numbers[0], max_head = numbers[1], max_headers = numbers[2], max_body = numbers[3];
    const char *buf = PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    if (offset < 0 || offset >= size || max_head < 16 || max_headers < 0 || max_body < 0) Py_RETURN_NONE;

    const char *p = buf + offset;
    Py_ssize_t window = size - offset < max_head ? size - offset : max_head;
    /* the head ends at the first CRLF CRLF, found within max_head bytes */
    const char *stop = memmem(p, (size_t)window, "\r\n\r\n", 4);
    if (stop == NULL) Py_RETURN_NONE;
    const char *body_at = stop + 4;

    /* the request line */
    const char *q = p;
    while (q < stop && *q != ' ') q++;
    Py_ssize_t mlen = q - p;
    PyObject *method = NULL;
    for (int i = 0; i < 7; i++) {
        if ((Py_ssize_t)strlen(method_names[i]) == mlen && memcmp(p, method_names[i], (size_t)mlen) == 0) {
            method = methods[i];
            break;
        }
    }
    if (method == NULL || q >= stop) Py_RETURN_NONE;
    const char *target = ++q;
    const char *query = NULL;
    while (q < stop && *q != ' ') {
        unsigned char c = (unsigned char)*q;
        if (c < 0x21 || c > 0x7e || c == '#') Py_RETURN_NONE;
        if (c == '?' && query == NULL) query = q;
        q++;
    }
    if (q == target || *target != '/' || q >= stop) Py_RETURN_NONE;
    const char *target_end = q++;
    if (stop - q < 8 || memcmp(q, "HTTP/1.", 7) != 0 || (q[7] != '1' && q[7] != '0')) Py_RETURN_NONE;
    int http11 = q[7] == '1';
    q += 8;
    if (q != stop && (stop - q < 2 || q[0] != '\r' || q[1] != '\n')) Py_RETURN_NONE;

    PyObject *headers = PyDict_New();
    if (headers == NULL) return NULL;
    Py_ssize_t count = 0, length = 0;
    int has_length = 0, close = 0, keep = 0;
    char lower[MAX_NAME];
    /* header lines: the last one's CRLF is the first half of the CRLF CRLF at stop */
    if (q != stop) {
        q += 2;
        for (;;) {
            const char *name = q;
            while (q < stop && tchar[(unsigned char)*q]) q++;
            Py_ssize_t nlen = q - name;
            if (nlen == 0 || nlen > MAX_NAME || q >= stop || *q != ':') goto declined;
            for (Py_ssize_t i = 0; i < nlen; i++) {
                char c = name[i];
                lower[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
            }
            q++;
            while (q < stop && (*q == ' ' || *q == '\t')) q++;
            const char *value = q;
            while (q < stop && *q != '\r') {
                unsigned char c = (unsigned char)*q;
                if ((c < 0x20 && c != '\t') || c > 0x7e) goto declined;
                q++;
            }
            Py_ssize_t vlen = q - value;
            if (vlen && (value[vlen - 1] == ' ' || value[vlen - 1] == '\t')) goto declined;
            if (++count > max_headers) goto declined;
            if (is_name(lower, nlen, "content-length")) {
                if (has_length || vlen == 0 || vlen > 18) goto declined;
                for (Py_ssize_t i = 0; i < vlen; i++) {
                    if (value[i] < '0' || value[i] > '9') goto declined;
                    length = length * 10 + (value[i] - '0');
                }
                has_length = 1;
                if (length > max_body) goto declined;
            } else if (is_name(lower, nlen, "transfer-encoding") || is_name(lower, nlen, "upgrade")
                       || is_name(lower, nlen, "expect") || is_name(lower, nlen, "proxy-connection")) {
                goto declined;
            } else if (is_name(lower, nlen, "connection")) {
                if (value_is(value, vlen, "close")) close = 1;
                else if (value_is(value, vlen, "keep-alive")) keep = 1;
                else goto declined;
            }
            PyObject *key = PyUnicode_DecodeLatin1(lower, nlen, NULL);
            if (key == NULL) goto failed;
            int seen = PyDict_Contains(headers, key);
            if (seen != 0) {
                Py_DECREF(key);
                if (seen < 0) goto failed;
                goto declined; /* a repeated name: httptools joins them */
            }
            PyObject *text = PyUnicode_DecodeLatin1(value, vlen, NULL);
            if (text == NULL) {
                Py_DECREF(key);
                goto failed;
            }
            int set = PyDict_SetItem(headers, key, text);
            Py_DECREF(key);
            Py_DECREF(text);
            if (set < 0) goto failed;
            if (q == stop) break; /* the last line */
            if (q[1] != '\n') goto declined; /* a bare CR (q + 1 <= stop: in bounds) */
            q += 2;
        }
    }
    if (close && keep) goto declined;
    if (length > size - (body_at - buf)) goto declined; /* the body is still to come */

    const char *path_end = query != NULL ? query : target_end;
    PyObject *path = PyUnicode_DecodeLatin1(target, path_end - target, NULL);
    PyObject *query_text = query != NULL ? PyUnicode_DecodeLatin1(query + 1, target_end - query - 1, NULL)
                                         : PyUnicode_FromStringAndSize("", 0);
    PyObject *body = PyBytes_FromStringAndSize(body_at, length);
    PyObject *end = PyLong_FromSsize_t(body_at - buf + length);
    if (path == NULL || query_text == NULL || body == NULL || end == NULL) {
        Py_XDECREF(path);
        Py_XDECREF(query_text);
        Py_XDECREF(body);
        Py_XDECREF(end);
        goto failed;
    }
    int alive = http11 ? !close : keep;
    Py_INCREF(method);
    PyObject *result = PyTuple_Pack(7, end, method, path, query_text, headers, body, alive ? Py_True : Py_False);
    Py_DECREF(end);
    Py_DECREF(method);
    Py_DECREF(path);
    Py_DECREF(query_text);
    Py_DECREF(body);
    Py_DECREF(headers);
    return result;
declined:
    Py_DECREF(headers);
    Py_RETURN_NONE;
failed:
    Py_DECREF(headers);
    return NULL;
}

static PyMethodDef module_methods[] = {
    {"parse_request", (PyCFunction)(void (*)(void))parse_request, METH_FASTCALL,
     "parse_request(data, offset, max_head, max_headers, max_body) -> (end, method, path, query, headers, "
     "body, keep_alive) for one whole simple request at data[offset:], or None: httptools parses it"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_fastparse",
    "One whole, simple HTTP/1.x request parsed in one C call (see modelpod.serving.http.server).", -1,
    module_methods,
};

PyMODINIT_FUNC
PyInit__fastparse(void)
{
    init_tables();
    for (int i = 0; i < 7; i++) {
        methods[i] = PyUnicode_InternFromString(method_names[i]);
        if (methods[i] == NULL) return NULL;
    }
    return PyModule_Create(&module_def);
}

/*
 * postgres_async._speedups: optional compiled twins of four hot paths.
 *
 * The pure-Python functions are the specification, and these must agree with them on
 * every input, values and problems alike (tests/unit/test_accel_differential.py and
 * tests/unit/test_reply_scan.py check with hypothesis):
 *
 *   parse_data_rows   <->  postgres_async.protocol.buffer.parse_data_rows
 *   format_copy_rows  <->  b"".join(_values.copy_text_line(row).encode() for row in rows)
 *   scan_reply        <->  postgres_async.protocol.reply.scan_reply
 *   copy_binary_rows  <->  postgres_async._copy_binary.encode_rows
 *
 * The only deliberate difference: parse_data_rows refuses a negative ``pos`` with
 * ValueError (the reference would index from the end of the buffer; no caller does that).
 * scan_reply and its reference both refuse it.
 *
 * The bytes come from the server, which is not trusted: every length read from the wire
 * is compared against the bytes that are left *before* anything is added to a position,
 * and all positions are Py_ssize_t inside [0, len(data)], so no arithmetic can overflow.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <limits.h>
#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------------------------------ */
/* helpers                                                                              */

/* Big-endian reads (the signed one without relying on implementation-defined
 * conversions). */
static inline int32_t
read_int32(const unsigned char *p)
{
    uint32_t v = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) |
                 (uint32_t)p[3];
    if (v & 0x80000000u) {
        return (int32_t)(v - 0x80000000u) + INT32_MIN;
    }
    return (int32_t)v;
}

static inline Py_ssize_t
read_uint16(const unsigned char *p)
{
    return (Py_ssize_t)(((unsigned)p[0] << 8) | (unsigned)p[1]);
}

/* A Python int as a long long, saturated: the comparisons made with it below give the
 * same answers as with the unbounded Python int. */
static int
saturated_long_long(PyObject *obj, long long *out)
{
    int overflow = 0;
    long long value = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (value == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow > 0) {
        value = LLONG_MAX;
    }
    else if (overflow < 0) {
        value = LLONG_MIN;
    }
    *out = value;
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* parse_data_rows                                                                      */

/* bytes.decode() of a value: NULL with UnicodeDecodeError set when not UTF-8. Most
 * values are ASCII, and checking 8 bytes at a time then copying measured well ahead
 * of PyUnicode_DecodeUTF8 for the short strings of a typical row. Empty and
 * one-character values go to PyUnicode_DecodeUTF8, which returns shared singletons. */
static PyObject *
decode_text(const unsigned char *s, Py_ssize_t n)
{
    if (n > 1) {
        const uint64_t high_bits = 0x8080808080808080ULL;
        uint64_t seen = 0;
        Py_ssize_t i = 0;
        for (; n - i >= 8; i += 8) {
            uint64_t word;
            memcpy(&word, s + i, 8);
            if (word & high_bits) {
                goto not_ascii;
            }
        }
        for (; i < n; i++) {
            seen |= s[i];
        }
        if ((seen & high_bits) == 0) {
            PyObject *text = PyUnicode_New(n, 127);
            if (text != NULL) {
                memcpy(PyUnicode_1BYTE_DATA(text), s, (size_t)n);
            }
            return text;
        }
    }
not_ascii:
    return PyUnicode_DecodeUTF8((const char *)s, n, "strict");
}

PyDoc_STRVAR(parse_data_rows_doc,
"parse_data_rows($module, data, pos, column_count, limit, max_length, /)\n"
"--\n"
"\n"
"Decode the complete DataRow messages at data[pos:]: (rows, new pos, problem or None).\n"
"\n"
"The compiled twin of postgres_async.protocol.buffer.parse_data_rows; see there.");

static PyObject *
parse_data_rows(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError,
                     "parse_data_rows() takes exactly 5 positional arguments (%zd given)",
                     nargs);
        return NULL;
    }
    PyObject *pos_obj = args[1];
    PyObject *column_count_obj = args[2];
    long long start, column_count, limit, max_length;
    if (saturated_long_long(pos_obj, &start) < 0 ||
        saturated_long_long(column_count_obj, &column_count) < 0 ||
        saturated_long_long(args[3], &limit) < 0 ||
        saturated_long_long(args[4], &max_length) < 0) {
        return NULL;
    }

    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const unsigned char *data = (const unsigned char *)view.buf;
    const Py_ssize_t end = view.len;

    PyObject *rows = PyList_New(0);
    PyObject *problem = NULL;
    PyObject *row = NULL;
    Py_ssize_t pos = 0;
    int moved = 0; /* whether pos differs from the caller's (then pos_obj is returned) */
    if (rows == NULL) {
        goto error;
    }
    if (limit > 0 && start < 0 && start <= (long long)end - 7) {
        PyErr_SetString(PyExc_ValueError, "parse_data_rows: pos must not be negative");
        goto error;
    }
    if (start >= 0 && start <= (long long)end) {
        pos = (Py_ssize_t)start;
    }
    else {
        limit = 0; /* pos + 7 <= end is false (or pos < 0 with limit <= 0): no rows */
    }

    Py_ssize_t nrows = 0;
    while ((long long)nrows < limit && end - pos >= 7 && data[pos] == 'D') {
        const int32_t length = read_int32(data + pos + 1);
        if (length < 6 || (long long)length + 1 > max_length) {
            break;
        }
        if ((Py_ssize_t)length > end - pos - 1) {
            break; /* not all here yet */
        }
        const Py_ssize_t msg_end = pos + 1 + (Py_ssize_t)length;
        /* The column count is unsigned, as PostgreSQL sends it. */
        const Py_ssize_t count = read_uint16(data + pos + 5);
        if ((long long)count != column_count) {
            PyObject *expected = PyObject_Format(column_count_obj, NULL);
            if (expected == NULL) {
                goto error;
            }
            problem = PyUnicode_FromFormat(
                "number of columns in DataRow message did not match RowDescription: "
                "expected %U, got %zd",
                expected, count);
            Py_DECREF(expected);
            if (problem == NULL) {
                goto error;
            }
            break;
        }
        row = PyTuple_New(count);
        if (row == NULL) {
            goto error;
        }
        Py_ssize_t p = pos + 7;
        for (Py_ssize_t i = 0; i < count; i++) {
            if (msg_end - p < 4) {
                problem = PyUnicode_FromString("Failed to parse DataRow: truncated column");
                goto row_problem;
            }
            const int32_t size = read_int32(data + p);
            p += 4;
            PyObject *value;
            if (size < 0) {
                if (size != -1) {
                    problem = PyUnicode_FromFormat(
                        "Failed to parse DataRow: column length %ld", (long)size);
                    goto row_problem;
                }
                value = Py_NewRef(Py_None);
            }
            else {
                if ((Py_ssize_t)size > msg_end - p) {
                    problem = PyUnicode_FromString("Failed to parse DataRow: truncated column");
                    goto row_problem;
                }
                value = decode_text(data + p, (Py_ssize_t)size);
                if (value == NULL) {
                    if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                        goto error;
                    }
                    PyErr_Clear();
                    problem = PyUnicode_FromString(
                        "Failed to parse DataRow: invalid UTF-8 in a value");
                    goto row_problem;
                }
                p += (Py_ssize_t)size;
            }
            PyTuple_SET_ITEM(row, i, value);
        }
        if (p != msg_end) {
            problem = PyUnicode_FromString("Failed to parse DataRow: trailing bytes");
            goto row_problem;
        }
        /* A tuple of str and None can be in no reference cycle: the collector would
         * untrack it at its first pass anyway (as it does any such tuple), so spare it
         * the work of looking at every row of a big result. */
        PyObject_GC_UnTrack(row);
        if (PyList_Append(rows, row) < 0) {
            goto error;
        }
        Py_CLEAR(row);
        nrows++;
        pos = msg_end;
        moved = 1;
        continue;

    row_problem:
        Py_CLEAR(row);
        if (problem == NULL) {
            goto error;
        }
        break;
    }

    PyBuffer_Release(&view);
    PyObject *new_pos = moved ? PyLong_FromSsize_t(pos) : Py_NewRef(pos_obj);
    if (new_pos == NULL) {
        Py_DECREF(rows);
        Py_XDECREF(problem);
        return NULL;
    }
    if (problem == NULL) {
        problem = Py_NewRef(Py_None);
    }
    PyObject *result = PyTuple_New(3);
    if (result == NULL) {
        Py_DECREF(rows);
        Py_DECREF(new_pos);
        Py_DECREF(problem);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, rows);
    PyTuple_SET_ITEM(result, 1, new_pos);
    PyTuple_SET_ITEM(result, 2, problem);
    return result;

error:
    Py_XDECREF(row);
    Py_XDECREF(rows);
    Py_XDECREF(problem);
    PyBuffer_Release(&view);
    return NULL;
}

/* ------------------------------------------------------------------------------------ */
/* format_copy_rows                                                                     */

/* A bytes object filled in place and shrunk to size at the end. */
typedef struct {
    PyObject *bytes;
    char *buf;
    Py_ssize_t len;
    Py_ssize_t cap;
} Writer;

static int
writer_init(Writer *w, Py_ssize_t cap)
{
    w->bytes = PyBytes_FromStringAndSize(NULL, cap);
    if (w->bytes == NULL) {
        return -1;
    }
    w->buf = PyBytes_AS_STRING(w->bytes);
    w->len = 0;
    w->cap = cap;
    return 0;
}

static int
writer_grow(Writer *w, Py_ssize_t extra)
{
    if (extra > PY_SSIZE_T_MAX - w->len) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t need = w->len + extra;
    Py_ssize_t cap = w->cap;
    while (cap < need) {
        cap = cap > PY_SSIZE_T_MAX / 2 ? need : cap * 2;
    }
    /* On failure _PyBytes_Resize frees the object and sets w->bytes to NULL. */
    if (_PyBytes_Resize(&w->bytes, cap) < 0) {
        return -1;
    }
    w->buf = PyBytes_AS_STRING(w->bytes);
    w->cap = cap;
    return 0;
}

static inline int
writer_reserve(Writer *w, Py_ssize_t extra)
{
    if (extra <= w->cap - w->len) {
        return 0;
    }
    return writer_grow(w, extra);
}

/* The UTF-8 bytes of a non-ASCII code point (a surrogate too, as "surrogatepass" would:
 * callers decide what a surrogate means); returns the position after them. */
static inline unsigned char *
put_utf8_non_ascii(unsigned char *out, Py_UCS4 c)
{
    if (c < 0x800) {
        out[0] = (unsigned char)(0xC0 | (c >> 6));
        out[1] = (unsigned char)(0x80 | (c & 0x3F));
        return out + 2;
    }
    if (c < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (c >> 12));
        out[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
        out[2] = (unsigned char)(0x80 | (c & 0x3F));
        return out + 3;
    }
    out[0] = (unsigned char)(0xF0 | (c >> 18));
    out[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
    out[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
    out[3] = (unsigned char)(0x80 | (c & 0x3F));
    return out + 4;
}

/* The decimal digits of v, written backwards ending at ``end``; returns their start. */
static inline char *
format_int64(char *end, long long v)
{
    char *p = end;
    unsigned long long magnitude = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + (int)(magnitude % 10));
        magnitude /= 10;
    } while (magnitude);
    if (v < 0) {
        *--p = '-';
    }
    return p;
}

/* The escape letter for each ASCII byte COPY text format escapes; NUL is refused. */
static unsigned char copy_escape[128];
#define NUL_MARK 1

static void
init_copy_escape(void)
{
    memset(copy_escape, 0, sizeof(copy_escape));
    copy_escape['\\'] = '\\';
    copy_escape['\n'] = 'n';
    copy_escape['\r'] = 'r';
    copy_escape['\t'] = 't';
    copy_escape[0] = NUL_MARK;
}

static int
nul_error(Py_ssize_t index)
{
    PyErr_Format(PyExc_ValueError, "COPY column %zd must not contain a NUL character", index);
    return -1;
}

/* Append text escaped for COPY, as UTF-8. A lone surrogate is written the way
 * "surrogatepass" would and reported through *surrogate: the caller raises once the
 * whole line is known, exactly where ``line.encode()`` raises in the reference. */
static int
write_text(Writer *w, PyObject *text, Py_ssize_t index, int *surrogate)
{
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(text) < 0) {
        return -1;
    }
#endif
    const Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    const int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    /* Worst case bytes per character: an escape is 2; a non-ASCII UCS1 character 2,
     * UCS2 3, UCS4 4. */
    const Py_ssize_t per = kind == PyUnicode_1BYTE_KIND ? 2 : kind == PyUnicode_2BYTE_KIND ? 3 : 4;
    if (n > (PY_SSIZE_T_MAX - 16) / per) {
        PyErr_NoMemory();
        return -1;
    }
    if (writer_reserve(w, n * per) < 0) {
        return -1;
    }
    unsigned char *out = (unsigned char *)w->buf + w->len;

    if (kind == PyUnicode_1BYTE_KIND) {
        const Py_UCS1 *s = (const Py_UCS1 *)data;
        for (Py_ssize_t i = 0; i < n; i++) {
            const Py_UCS1 c = s[i];
            if (c < 0x80) {
                const unsigned char e = copy_escape[c];
                if (e == 0) {
                    *out++ = c;
                }
                else if (e == NUL_MARK) {
                    return nul_error(index);
                }
                else {
                    out[0] = '\\';
                    out[1] = e;
                    out += 2;
                }
            }
            else {
                out = put_utf8_non_ascii(out, c);
            }
        }
    }
    else {
        for (Py_ssize_t i = 0; i < n; i++) {
            const Py_UCS4 c = PyUnicode_READ(kind, data, i);
            if (c < 0x80) {
                const unsigned char e = copy_escape[c];
                if (e == 0) {
                    *out++ = (unsigned char)c;
                }
                else if (e == NUL_MARK) {
                    return nul_error(index);
                }
                else {
                    out[0] = '\\';
                    out[1] = e;
                    out += 2;
                }
            }
            else {
                if (c >= 0xD800 && c <= 0xDFFF) {
                    *surrogate = 1;
                }
                out = put_utf8_non_ascii(out, c);
            }
        }
    }
    w->len = (Py_ssize_t)(out - (unsigned char *)w->buf);
    return 0;
}

/* str(value) for an exact int. */
static int
write_int(Writer *w, PyObject *value, Py_ssize_t index, int *surrogate)
{
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow) {
        /* Beyond 64 bits: str() itself (which also enforces the int digits limit). */
        PyObject *text = PyObject_Str(value);
        if (text == NULL) {
            return -1;
        }
        int rc = write_text(w, text, index, surrogate);
        Py_DECREF(text);
        return rc;
    }
    char digits[24];
    char *end = digits + sizeof(digits);
    const char *p = format_int64(end, v);
    const Py_ssize_t size = (Py_ssize_t)(end - p);
    if (writer_reserve(w, size) < 0) {
        return -1;
    }
    memcpy(w->buf + w->len, p, (size_t)size);
    w->len += size;
    return 0;
}

/* "COPY column N", the `what` handed to the fallback; the first ones made once. */
#define CACHED_COLUMN_NAMES 64
static PyObject *column_names[CACHED_COLUMN_NAMES + 1];

static PyObject *
column_name(Py_ssize_t index)
{
    if (index <= CACHED_COLUMN_NAMES) {
        return Py_NewRef(column_names[index]);
    }
    return PyUnicode_FromFormat("COPY column %zd", index);
}

static int
write_value(Writer *w, PyObject *value, PyObject *fallback, Py_ssize_t index, int *surrogate)
{
    if (PyUnicode_CheckExact(value)) {
        return write_text(w, value, index, surrogate);
    }
    if (value == Py_None) {
        goto null;
    }
    if (PyLong_CheckExact(value)) {
        return write_int(w, value, index, surrogate);
    }
    PyObject *what = column_name(index);
    if (what == NULL) {
        return -1;
    }
    PyObject *call_args[2] = {value, what};
    PyObject *text = PyObject_Vectorcall(fallback, call_args, 2, NULL);
    Py_DECREF(what);
    if (text == NULL) {
        return -1;
    }
    if (text == Py_None) {
        Py_DECREF(text);
        goto null;
    }
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "format_copy_rows: fallback returned %.200s, not str or None",
                     Py_TYPE(text)->tp_name);
        Py_DECREF(text);
        return -1;
    }
    int rc = write_text(w, text, index, surrogate);
    Py_DECREF(text);
    return rc;

null:
    if (writer_reserve(w, 2) < 0) {
        return -1;
    }
    w->buf[w->len] = '\\';
    w->buf[w->len + 1] = 'N';
    w->len += 2;
    return 0;
}

static inline int
write_byte(Writer *w, char c)
{
    if (w->len == w->cap && writer_grow(w, 1) < 0) {
        return -1;
    }
    w->buf[w->len++] = c;
    return 0;
}

/* Raise what ``line.encode()`` raises for the row just written (it holds a lone
 * surrogate): the row's bytes decoded with "surrogatepass" are exactly the reference's
 * line, and encoding that strictly raises the identical UnicodeEncodeError. */
static int
raise_surrogate_error(Writer *w, Py_ssize_t row_start)
{
    PyObject *line = PyUnicode_DecodeUTF8(w->buf + row_start, w->len - row_start,
                                          "surrogatepass");
    if (line == NULL) {
        return -1;
    }
    PyObject *encoded = PyUnicode_AsUTF8String(line);
    Py_DECREF(line);
    if (encoded != NULL) {
        Py_DECREF(encoded);
        PyErr_SetString(PyExc_SystemError, "format_copy_rows: surrogate expected");
    }
    return -1;
}

static int
write_row(Writer *w, PyObject *row, PyObject *fallback)
{
    if (PyUnicode_Check(row) || PyBytes_Check(row)) {
        PyErr_SetString(PyExc_TypeError,
                        "a COPY row must be a sequence of values, not a single str/bytes");
        return -1;
    }
    const Py_ssize_t row_start = w->len;
    int surrogate = 0;
    Py_ssize_t index = 0;
    if (PyList_CheckExact(row) || PyTuple_CheckExact(row)) {
        /* Indexing with the length read again each time is what list iteration does,
         * should the fallback change the list. */
        const int is_list = PyList_CheckExact(row);
        for (;;) {
            const Py_ssize_t size = is_list ? PyList_GET_SIZE(row) : PyTuple_GET_SIZE(row);
            if (index >= size) {
                break;
            }
            PyObject *value = is_list ? PyList_GET_ITEM(row, index) : PyTuple_GET_ITEM(row, index);
            Py_INCREF(value);
            index++;
            int rc = (index == 1 ? 0 : write_byte(w, '\t'));
            if (rc == 0) {
                rc = write_value(w, value, fallback, index, &surrogate);
            }
            Py_DECREF(value);
            if (rc < 0) {
                return -1;
            }
        }
    }
    else {
        PyObject *iterator = PyObject_GetIter(row);
        if (iterator == NULL) {
            return -1;
        }
        PyObject *value;
        while ((value = PyIter_Next(iterator)) != NULL) {
            index++;
            int rc = (index == 1 ? 0 : write_byte(w, '\t'));
            if (rc == 0) {
                rc = write_value(w, value, fallback, index, &surrogate);
            }
            Py_DECREF(value);
            if (rc < 0) {
                Py_DECREF(iterator);
                return -1;
            }
        }
        Py_DECREF(iterator);
        if (PyErr_Occurred()) {
            return -1;
        }
    }
    if (write_byte(w, '\n') < 0) {
        return -1;
    }
    if (surrogate) {
        return raise_surrogate_error(w, row_start);
    }
    return 0;
}

PyDoc_STRVAR(format_copy_rows_doc,
"format_copy_rows($module, rows, fallback, /)\n"
"--\n"
"\n"
"The rows in COPY text format, UTF-8: b\"\".join(copy_text_line(r).encode() for r in rows).\n"
"\n"
"str, None and int are handled here; any other value becomes\n"
"fallback(value, \"COPY column N\") (postgres_async._values.to_text), then escaped.");

static PyObject *
format_copy_rows(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError,
                     "format_copy_rows() takes exactly 2 positional arguments (%zd given)",
                     nargs);
        return NULL;
    }
    PyObject *rows = args[0];
    PyObject *fallback = args[1];
    Writer w;
    Py_ssize_t guess = 4096;
    if (PyList_CheckExact(rows) || PyTuple_CheckExact(rows)) {
        Py_ssize_t count = Py_SIZE(rows);
        if (count < (PY_SSIZE_T_MAX / 64)) {
            guess = Py_MAX(guess, count * 32);
        }
    }

    if (PyList_CheckExact(rows) || PyTuple_CheckExact(rows)) {
        if (writer_init(&w, guess) < 0) {
            return NULL;
        }
        const int is_list = PyList_CheckExact(rows);
        for (Py_ssize_t i = 0;; i++) {
            const Py_ssize_t size = is_list ? PyList_GET_SIZE(rows) : PyTuple_GET_SIZE(rows);
            if (i >= size) {
                break;
            }
            PyObject *row = is_list ? PyList_GET_ITEM(rows, i) : PyTuple_GET_ITEM(rows, i);
            Py_INCREF(row);
            int rc = write_row(&w, row, fallback);
            Py_DECREF(row);
            if (rc < 0) {
                goto error;
            }
        }
    }
    else {
        PyObject *iterator = PyObject_GetIter(rows);
        if (iterator == NULL) {
            return NULL;
        }
        if (writer_init(&w, guess) < 0) {
            Py_DECREF(iterator);
            return NULL;
        }
        PyObject *row;
        while ((row = PyIter_Next(iterator)) != NULL) {
            int rc = write_row(&w, row, fallback);
            Py_DECREF(row);
            if (rc < 0) {
                Py_DECREF(iterator);
                goto error;
            }
        }
        Py_DECREF(iterator);
        if (PyErr_Occurred()) {
            goto error;
        }
    }
    if (_PyBytes_Resize(&w.bytes, w.len) < 0) {
        return NULL;
    }
    return w.bytes;

error:
    Py_XDECREF(w.bytes);
    return NULL;
}

/* ------------------------------------------------------------------------------------ */
/* scan_reply                                                                           */

/* Whether s[0:n] is UTF-8 as Python's strict decoder judges it: the well-formed
 * sequences of the Unicode standard (no overlong forms, no surrogates, nothing beyond
 * U+10FFFF). Checked without making a str: column names are only validated here. */
static int
is_utf8(const unsigned char *s, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    while (i < n) {
        const unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        Py_ssize_t more;
        unsigned char low = 0x80, high = 0xBF; /* the range of the second byte */
        if (c >= 0xC2 && c <= 0xDF) {
            more = 1;
        }
        else if (c >= 0xE0 && c <= 0xEF) {
            more = 2;
            if (c == 0xE0) {
                low = 0xA0; /* overlong */
            }
            else if (c == 0xED) {
                high = 0x9F; /* surrogates */
            }
        }
        else if (c >= 0xF0 && c <= 0xF4) {
            more = 3;
            if (c == 0xF0) {
                low = 0x90; /* overlong */
            }
            else if (c == 0xF4) {
                high = 0x8F; /* beyond U+10FFFF */
            }
        }
        else {
            return 0;
        }
        if (n - i - 1 < more || s[i + 1] < low || s[i + 1] > high) {
            return 0;
        }
        for (Py_ssize_t k = 2; k <= more; k++) {
            if ((s[i + k] & 0xC0) != 0x80) {
                return 0;
            }
        }
        i += 1 + more;
    }
    return 1;
}

/* The payload size of the message at data[p:] when its length field is at least 4,
 * its length plus the type byte at most max_length, and all of it is here; else -1. */
static inline Py_ssize_t
whole_message(const unsigned char *data, Py_ssize_t end, Py_ssize_t p, long long max_length)
{
    if (end - p < 5) {
        return -1;
    }
    const int32_t length = read_int32(data + p + 1);
    if (length < 4 || (long long)length + 1 > max_length || (Py_ssize_t)length > end - p - 1) {
        return -1;
    }
    return (Py_ssize_t)length - 4;
}

/* The column count of a RowDescription payload RowDescription.decode accepts, else -1:
 * per column a NUL-terminated UTF-8 name and 18 bytes ending in format code 0 or 1,
 * and nothing after the last. */
static Py_ssize_t
row_description_columns(const unsigned char *s, Py_ssize_t n)
{
    if (n < 2) {
        return -1;
    }
    const Py_ssize_t count = read_uint16(s);
    Py_ssize_t p = 2;
    for (Py_ssize_t i = 0; i < count; i++) {
        const unsigned char *nul = memchr(s + p, 0, (size_t)(n - p));
        if (nul == NULL) {
            return -1;
        }
        const Py_ssize_t name_end = (Py_ssize_t)(nul - s);
        if (!is_utf8(s + p, name_end - p) || n - name_end - 1 < 18) {
            return -1;
        }
        p = name_end + 1 + 18;
        if (s[p - 2] != 0 || s[p - 1] > 1) {
            return -1;
        }
    }
    return p == n ? count : -1;
}

/* The row of the DataRow whose column values are data[p:msg_end] (after the count),
 * in *row; 0 with *row NULL when it is malformed or not UTF-8, -1 on an error. */
static int
decode_row(const unsigned char *data, Py_ssize_t p, Py_ssize_t msg_end, Py_ssize_t count,
           PyObject **row)
{
    PyObject *values = PyTuple_New(count);
    *row = NULL;
    if (values == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        if (msg_end - p < 4) {
            goto malformed;
        }
        const int32_t size = read_int32(data + p);
        p += 4;
        PyObject *value;
        if (size < 0) {
            if (size != -1) {
                goto malformed;
            }
            value = Py_NewRef(Py_None);
        }
        else {
            if ((Py_ssize_t)size > msg_end - p) {
                goto malformed;
            }
            value = decode_text(data + p, (Py_ssize_t)size);
            if (value == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                    Py_DECREF(values);
                    return -1;
                }
                PyErr_Clear();
                goto malformed;
            }
            p += (Py_ssize_t)size;
        }
        PyTuple_SET_ITEM(values, i, value);
    }
    if (p != msg_end) {
        goto malformed;
    }
    /* Only str and None: no cycle can run through it (see parse_data_rows). */
    PyObject_GC_UnTrack(values);
    *row = values;
    return 0;

malformed:
    Py_DECREF(values);
    return 0;
}

PyDoc_STRVAR(scan_reply_doc,
"scan_reply($module, data, pos, max_length, row_limit, parsed=True, known_columns=-1, /)\n"
"--\n"
"\n"
"The whole ordinary query reply at data[pos:], or None:\n"
"(pos after ReadyForQuery, RowDescription payload or None, rows, tag, status byte).\n"
"\n"
"The compiled twin of postgres_async.protocol.reply.scan_reply; see there.");

static PyObject *
scan_reply(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 4 || nargs > 6) {
        PyErr_Format(PyExc_TypeError,
                     "scan_reply() takes from 4 to 6 positional arguments (%zd given)", nargs);
        return NULL;
    }
    /* Whether the reply starts with ParseComplete: not when the query bound a statement
     * prepared earlier. */
    int parsed = 1;
    if (nargs >= 5 && (parsed = PyObject_IsTrue(args[4])) < 0) {
        return NULL;
    }
    /* -1: a Describe was sent (NoData or a RowDescription follows BindComplete); -2 or
     * a column count: none was, the caller knows there are no rows or their width. */
    long long start, max_length, row_limit, known_columns = -1;
    if (saturated_long_long(args[1], &start) < 0 ||
        saturated_long_long(args[2], &max_length) < 0 ||
        saturated_long_long(args[3], &row_limit) < 0 ||
        (nargs == 6 && saturated_long_long(args[5], &known_columns) < 0)) {
        return NULL;
    }
    if (start < 0) {
        PyErr_SetString(PyExc_ValueError, "scan_reply: pos must not be negative");
        return NULL;
    }
    if (known_columns < -2) {
        PyErr_SetString(PyExc_ValueError,
                        "scan_reply: known_columns must be -2, -1 or a column count");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const unsigned char *data = (const unsigned char *)view.buf;
    const Py_ssize_t end = view.len;
    PyObject *rows = NULL, *tag = NULL, *description = NULL, *new_pos = NULL, *status = NULL;

    /* First the framing, from the headers alone and making no object, so that a reply
     * not all here yet (or too long for row_limit) costs no decoding. ReadyForQuery's
     * 6 bytes (and so every other message) must fit max_length. */
    if (start > (long long)end || max_length < 6 || row_limit < 0) {
        goto not_ordinary;
    }
    Py_ssize_t p = (Py_ssize_t)start;
    if (parsed) {
        if (end - p < 5 || memcmp(data + p, "1\0\0\0\x04", 5) != 0) {
            goto not_ordinary;
        }
        p += 5;
    }
    if (end - p < 5 || memcmp(data + p, "2\0\0\0\x04", 5) != 0) {
        goto not_ordinary;
    }
    p += 5;
    /* column_count -1: no DataRow may follow. */
    Py_ssize_t description_start = -1, description_size = 0, column_count = -1, nrows = 0;
    if (known_columns == -1) {
        if (end - p < 5) {
            goto not_ordinary;
        }
        if (data[p] == 'n') {
            if (read_int32(data + p + 1) != 4) {
                goto not_ordinary;
            }
            p += 5;
        }
        else if (data[p] == 'T') {
            description_size = whole_message(data, end, p, max_length);
            if (description_size < 2) {
                goto not_ordinary;
            }
            description_start = p + 5;
            column_count = row_description_columns(data + description_start, description_size);
            if (column_count < 0) {
                goto not_ordinary;
            }
            p = description_start + description_size;
        }
        else {
            goto not_ordinary;
        }
    }
    else if (known_columns >= 0) {
        /* No DataRow has more than 65535 columns: beyond, only zero rows can match. */
        column_count = known_columns < 65536 ? (Py_ssize_t)known_columns : 65536;
    }
    const Py_ssize_t rows_start = p;
    while (column_count >= 0 && p < end && data[p] == 'D') {
        const Py_ssize_t size = whole_message(data, end, p, max_length);
        if (size < 2 || read_uint16(data + p + 5) != column_count ||
            (long long)nrows >= row_limit) {
            goto not_ordinary;
        }
        nrows++;
        p += 5 + size;
    }
    const Py_ssize_t tag_size =
        whole_message(data, end, p, max_length < 30001 ? max_length : 30001);
    if (tag_size < 1 || data[p] != 'C') {
        goto not_ordinary;
    }
    const Py_ssize_t tag_start = p + 5;
    if (memchr(data + tag_start, 0, (size_t)tag_size) != data + tag_start + tag_size - 1) {
        goto not_ordinary;
    }
    p = tag_start + tag_size;
    if (end - p < 6 || data[p] != 'Z' || read_int32(data + p + 1) != 5) {
        goto not_ordinary;
    }
    const unsigned char status_byte = data[p + 5];
    if (status_byte != 'I' && status_byte != 'T' && status_byte != 'E') {
        goto not_ordinary;
    }
    p += 6;

    /* Then the values, in one pass over the DataRows framed above. */
    tag = decode_text(data + tag_start, tag_size - 1);
    if (tag == NULL) {
        goto decode_failed;
    }
    rows = PyList_New(nrows);
    if (rows == NULL) {
        goto error;
    }
    Py_ssize_t q = rows_start;
    for (Py_ssize_t i = 0; i < nrows; i++) {
        const Py_ssize_t msg_end = q + 1 + (Py_ssize_t)read_int32(data + q + 1);
        PyObject *row;
        if (decode_row(data, q + 7, msg_end, column_count, &row) < 0) {
            goto error;
        }
        if (row == NULL) {
            goto not_ordinary;
        }
        PyList_SET_ITEM(rows, i, row);
        q = msg_end;
    }
    description = description_start < 0
                      ? Py_NewRef(Py_None)
                      : PyBytes_FromStringAndSize((const char *)data + description_start,
                                                  description_size);
    if (description == NULL) {
        goto error;
    }
    new_pos = PyLong_FromSsize_t(p);
    if (new_pos == NULL) {
        goto error;
    }
    status = PyLong_FromLong(status_byte);
    if (status == NULL) {
        goto error;
    }
    PyBuffer_Release(&view);
    PyObject *result = PyTuple_New(5);
    if (result == NULL) {
        goto error_released;
    }
    PyTuple_SET_ITEM(result, 0, new_pos);
    PyTuple_SET_ITEM(result, 1, description);
    PyTuple_SET_ITEM(result, 2, rows);
    PyTuple_SET_ITEM(result, 3, tag);
    PyTuple_SET_ITEM(result, 4, status);
    return result;

decode_failed:
    if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        goto error;
    }
    PyErr_Clear();
not_ordinary:
    Py_XDECREF(rows); /* a list still partly NULL is fine to free */
    Py_XDECREF(tag);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;

error:
    PyBuffer_Release(&view);
error_released:
    Py_XDECREF(rows);
    Py_XDECREF(tag);
    Py_XDECREF(description);
    Py_XDECREF(new_pos);
    Py_XDECREF(status);
    return NULL;
}

/* ------------------------------------------------------------------------------------ */
/* encode_query: the bytes of one extended-protocol query                               */

PyDoc_STRVAR(encode_query_doc,
             "encode_query(head, statement, parameters, tail) -> bytes | None\n\n"
             "head + a Bind of the parameters in text format to the named statement\n"
             "(b'' for the unnamed one) + tail, or None when a parameter needs the\n"
             "Python path (see _accel.encode_query_python).");

static inline void
put_int32(char *p, int32_t v)
{
    const uint32_t u = (uint32_t)v;
    p[0] = (char)(u >> 24);
    p[1] = (char)(u >> 16);
    p[2] = (char)(u >> 8);
    p[3] = (char)u;
}

/* One parameter as (int32 length, text); 1 when only the Python path can say what it
 * becomes (or which error it is): a type other than exact str/int/bool/None, a NUL, a
 * lone surrogate, an int beyond 64 bits. */
static int
put_parameter(Writer *w, PyObject *value)
{
    const char *text;
    Py_ssize_t size;
    char digits[24];
    if (value == Py_None) {
        if (writer_reserve(w, 4) < 0) {
            return -1;
        }
        put_int32(w->buf + w->len, -1);
        w->len += 4;
        return 0;
    }
    if (PyUnicode_CheckExact(value)) {
        text = PyUnicode_AsUTF8AndSize(value, &size);
        if (text == NULL) {
            PyErr_Clear(); /* a lone surrogate: the reference raises its ValueError */
            return 1;
        }
        if (memchr(text, 0, (size_t)size) != NULL) {
            return 1;
        }
    }
    else if (value == Py_True || value == Py_False) {
        text = value == Py_True ? "true" : "false";
        size = value == Py_True ? 4 : 5;
    }
    else if (PyLong_CheckExact(value)) {
        int overflow = 0;
        const long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (v == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (overflow) {
            return 1;
        }
        char *end = digits + sizeof(digits);
        text = format_int64(end, v);
        size = (Py_ssize_t)(end - text);
    }
    else {
        return 1;
    }
    if (size > INT32_MAX - 4 || writer_reserve(w, 4 + size) < 0) {
        if (!PyErr_Occurred()) {
            PyErr_NoMemory();
        }
        return -1;
    }
    put_int32(w->buf + w->len, (int32_t)size);
    memcpy(w->buf + w->len + 4, text, (size_t)size);
    w->len += 4 + size;
    return 0;
}

static PyObject *
encode_query(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[1]) ||
        !PyBytes_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError,
                        "encode_query(head: bytes, statement: bytes, parameters, tail: bytes)");
        return NULL;
    }
    PyObject *head = args[0];
    PyObject *statement = args[1];
    PyObject *parameters = args[2];
    PyObject *tail = args[3];
    const Py_ssize_t statement_size = PyBytes_GET_SIZE(statement);
    if (memchr(PyBytes_AS_STRING(statement), 0, (size_t)statement_size) != NULL) {
        PyErr_SetString(PyExc_ValueError, "encode_query: the statement name contains a NUL");
        return NULL;
    }
    PyObject **items;
    Py_ssize_t count;
    if (parameters == Py_None) {
        items = NULL;
        count = 0;
    }
    else if (PyList_CheckExact(parameters)) {
        items = PySequence_Fast_ITEMS(parameters);
        count = PyList_GET_SIZE(parameters);
    }
    else if (PyTuple_CheckExact(parameters)) {
        items = PySequence_Fast_ITEMS(parameters);
        count = PyTuple_GET_SIZE(parameters);
    }
    else {
        Py_RETURN_NONE; /* other sequences (and the str/bytes mistake) */
    }
    if (count > 65535) {
        Py_RETURN_NONE;
    }
    const Py_ssize_t head_size = PyBytes_GET_SIZE(head);
    const Py_ssize_t tail_size = PyBytes_GET_SIZE(tail);
    Writer w;
    if (writer_init(&w, head_size + statement_size + 15 + 16 * count + tail_size) < 0) {
        return NULL;
    }
    memcpy(w.buf, PyBytes_AS_STRING(head), (size_t)head_size);
    /* 'B', length (later), the unnamed portal, the statement's name, no parameter
     * format codes (all text), the parameter count. */
    char *bind = w.buf + head_size;
    bind[0] = 'B';
    bind[5] = 0;
    memcpy(bind + 6, PyBytes_AS_STRING(statement), (size_t)statement_size);
    char *after_name = bind + 6 + statement_size;
    memset(after_name, 0, 3);
    after_name[3] = (char)(count >> 8);
    after_name[4] = (char)count;
    w.len = head_size + 11 + statement_size;
    /* No Python code runs in the loop (exact types only), so the list cannot change. */
    for (Py_ssize_t i = 0; i < count; i++) {
        const int rc = put_parameter(&w, items[i]);
        if (rc != 0) {
            Py_XDECREF(w.bytes); /* NULL if a failed resize already freed it */
            if (rc < 0) {
                return NULL;
            }
            Py_RETURN_NONE;
        }
    }
    if (writer_reserve(&w, 2 + tail_size) < 0) {
        return NULL;
    }
    w.buf[w.len] = 0; /* no result format codes: all text */
    w.buf[w.len + 1] = 0;
    w.len += 2;
    const Py_ssize_t bind_length = w.len - head_size - 1;
    if (bind_length > INT32_MAX) {
        Py_DECREF(w.bytes);
        Py_RETURN_NONE;
    }
    put_int32(w.buf + head_size + 1, (int32_t)bind_length);
    memcpy(w.buf + w.len, PyBytes_AS_STRING(tail), (size_t)tail_size);
    w.len += tail_size;
    if (_PyBytes_Resize(&w.bytes, w.len) < 0) {
        return NULL;
    }
    return w.bytes;
}

/* ------------------------------------------------------------------------------------ */
/* copy_binary_rows                                                                     */
/*
 * The compiled twin of postgres_async._copy_binary.encode_rows: rows of typed values in
 * COPY binary format. The common kinds (the KIND_* codes of _copy_binary) are encoded
 * here when the value has the exact expected type and fits; any other value goes to the
 * column's Python encoder. Whenever anything about a row is unusual (not an exact
 * tuple/list, the wrong length, an encoder raising TypeError/ValueError, a list that
 * Python code might change under us) the row is dropped from the output and handed
 * whole to the reference's row encoder, which encodes it or raises: the exceptions are
 * the reference's own, by construction.
 */

enum {
    BK_OTHER = 0,
    BK_INT2 = 1,
    BK_INT4 = 2,
    BK_INT8 = 3,
    BK_FLOAT4 = 4,
    BK_FLOAT8 = 5,
    BK_BOOL = 6,
    BK_TEXT = 7,
    BK_BYTEA = 8,
    BK_JSONB = 9,
};

static inline void
put_be16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static inline void
put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static inline void
put_be64(unsigned char *p, uint64_t v)
{
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}

/* A fixed-size field: int32 length, then the big-endian value. */
static inline int
binary_fixed(Writer *w, uint64_t v, int size)
{
    if (writer_reserve(w, 4 + size) < 0) {
        return -1;
    }
    unsigned char *out = (unsigned char *)w->buf + w->len;
    put_be32(out, (uint32_t)size);
    if (size == 1) {
        out[4] = (unsigned char)v;
    }
    else if (size == 2) {
        put_be16(out + 4, (uint16_t)v);
    }
    else if (size == 4) {
        put_be32(out + 4, (uint32_t)v);
    }
    else {
        put_be64(out + 4, v);
    }
    w->len += 4 + size;
    return 0;
}

/* Raw bytes as one field; 0 if too long for a field (the reference says so). */
static int
binary_raw(Writer *w, const char *data, Py_ssize_t n)
{
    if (n > INT32_MAX) {
        return 0;
    }
    if (writer_reserve(w, 4 + n) < 0) {
        return -1;
    }
    put_be32((unsigned char *)w->buf + w->len, (uint32_t)n);
    memcpy(w->buf + w->len + 4, data, (size_t)n);
    w->len += 4 + n;
    return 1;
}

/* A str as UTF-8 after an optional prefix byte (jsonb's version). 1: written; 0: not
 * here (NUL, a lone surrogate, too long: the Python encoder decides); -1: error. */
static int
binary_text(Writer *w, PyObject *text, int prefix)
{
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(text) < 0) {
        return -1;
    }
#endif
    const Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    const Py_ssize_t extra = prefix >= 0 ? 1 : 0;
    if (PyUnicode_IS_ASCII(text)) {
        const char *s = (const char *)PyUnicode_DATA(text);
        if (n > INT32_MAX - extra || memchr(s, 0, (size_t)n) != NULL) {
            return 0;
        }
        if (writer_reserve(w, 4 + extra + n) < 0) {
            return -1;
        }
        unsigned char *out = (unsigned char *)w->buf + w->len;
        put_be32(out, (uint32_t)(n + extra));
        if (extra) {
            out[4] = (unsigned char)prefix;
        }
        memcpy(out + 4 + extra, s, (size_t)n);
        w->len += 4 + extra + n;
        return 1;
    }
    const int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    const Py_ssize_t per = kind == PyUnicode_1BYTE_KIND ? 2 : kind == PyUnicode_2BYTE_KIND ? 3 : 4;
    if (n > (PY_SSIZE_T_MAX - 16) / per) {
        PyErr_NoMemory();
        return -1;
    }
    if (writer_reserve(w, 4 + extra + n * per) < 0) {
        return -1;
    }
    unsigned char *start = (unsigned char *)w->buf + w->len;
    unsigned char *out = start + 4;
    if (extra) {
        *out++ = (unsigned char)prefix;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        const Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c < 0x80) {
            if (c == 0) {
                return 0;
            }
            *out++ = (unsigned char)c;
        }
        else if (c >= 0xD800 && c <= 0xDFFF) {
            return 0;
        }
        else {
            out = put_utf8_non_ascii(out, c);
        }
    }
    const Py_ssize_t size = (Py_ssize_t)(out - start) - 4;
    if (size > INT32_MAX) {
        return 0;
    }
    put_be32(start, (uint32_t)size);
    w->len += 4 + size;
    return 1;
}

/* One value of a common kind, done here. 1: written; 0: not here (another type, out
 * of range, ...: the Python encoder decides); -1: error. */
static int
binary_value(Writer *w, PyObject *value, int kind)
{
    switch (kind) {
    case BK_INT2:
    case BK_INT4:
    case BK_INT8: {
        if (!PyLong_CheckExact(value)) {
            return 0;
        }
        int overflow = 0;
        const long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (v == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (overflow) {
            return 0;
        }
        if (kind == BK_INT8) {
            return binary_fixed(w, (uint64_t)v, 8) < 0 ? -1 : 1;
        }
        if (kind == BK_INT4) {
            if (v < INT32_MIN || v > INT32_MAX) {
                return 0;
            }
            return binary_fixed(w, (uint32_t)(int32_t)v, 4) < 0 ? -1 : 1;
        }
        if (v < INT16_MIN || v > INT16_MAX) {
            return 0;
        }
        return binary_fixed(w, (uint16_t)(int16_t)v, 2) < 0 ? -1 : 1;
    }
    case BK_FLOAT4:
    case BK_FLOAT8: {
        if (!PyFloat_CheckExact(value)) {
            return 0;
        }
        const double d = PyFloat_AS_DOUBLE(value);
        if (kind == BK_FLOAT8) {
            uint64_t bits;
            memcpy(&bits, &d, sizeof(bits));
            return binary_fixed(w, bits, 8) < 0 ? -1 : 1;
        }
        /* As struct.pack(">f"): round to nearest; a finite value that becomes infinite
         * is out of range. */
        const float f = (float)d;
        if (Py_IS_INFINITY(f) && !Py_IS_INFINITY(d)) {
            return 0;
        }
        uint32_t bits;
        memcpy(&bits, &f, sizeof(bits));
        return binary_fixed(w, bits, 4) < 0 ? -1 : 1;
    }
    case BK_BOOL:
        if (value == Py_True || value == Py_False) {
            return binary_fixed(w, value == Py_True, 1) < 0 ? -1 : 1;
        }
        return 0;
    case BK_TEXT:
    case BK_JSONB:
        if (!PyUnicode_CheckExact(value)) {
            return 0;
        }
        return binary_text(w, value, kind == BK_JSONB ? 1 : -1);
    case BK_BYTEA:
        if (PyBytes_CheckExact(value)) {
            return binary_raw(w, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value));
        }
        if (PyByteArray_CheckExact(value)) {
            return binary_raw(w, PyByteArray_AS_STRING(value), PyByteArray_GET_SIZE(value));
        }
        return 0;
    default:
        return 0;
    }
}

/* The column's Python encoder. 1: written; 0: it raised TypeError/ValueError or its
 * result is too long for a field (the row encoder will raise the same); -1: error. */
static int
binary_fallback(Writer *w, PyObject *encoder, PyObject *value, Py_ssize_t column)
{
    PyObject *data = PyObject_Vectorcall(encoder, &value, 1, NULL);
    if (data == NULL) {
        if (PyErr_ExceptionMatches(PyExc_TypeError) || PyErr_ExceptionMatches(PyExc_ValueError)) {
            PyErr_Clear();
            return 0;
        }
        return -1;
    }
    if (!PyBytes_Check(data)) {
        PyErr_Format(PyExc_TypeError, "copy_binary_rows: the encoder of column %zd returned %.200s, not bytes",
                     column, Py_TYPE(data)->tp_name);
        Py_DECREF(data);
        return -1;
    }
    const int rc = binary_raw(w, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data));
    Py_DECREF(data);
    return rc;
}

/* One row. 1: written; 0: not here (the caller asks the row encoder); -1: error. */
static int
binary_row(Writer *w, PyObject *row, const unsigned char *kinds, PyObject *encoders,
           Py_ssize_t ncols, int any_other)
{
    PyObject *values;
    if (PyTuple_CheckExact(row)) {
        values = Py_NewRef(row);
    }
    else if (PyList_CheckExact(row)) {
        /* Python encoders run between values and could change a list: with a column of
         * another kind, work on a copy taken now, as the reference's tuple(row). */
        values = any_other ? PyList_AsTuple(row) : Py_NewRef(row);
        if (values == NULL) {
            return -1;
        }
    }
    else {
        return 0;
    }
    const int is_list = PyList_CheckExact(values);
    int rc = 0;
    if (Py_SIZE(values) != ncols) {
        goto done;
    }
    if (writer_reserve(w, 2) < 0) {
        rc = -1;
        goto done;
    }
    put_be16((unsigned char *)w->buf + w->len, (uint16_t)ncols);
    w->len += 2;
    for (Py_ssize_t j = 0; j < ncols; j++) {
        PyObject *value = is_list ? PyList_GET_ITEM(values, j) : PyTuple_GET_ITEM(values, j);
        if (value == Py_None) {
            if (writer_reserve(w, 4) < 0) {
                rc = -1;
                goto done;
            }
            put_be32((unsigned char *)w->buf + w->len, 0xFFFFFFFFu);
            w->len += 4;
            continue;
        }
        int done_here = kinds[j] == BK_OTHER ? 0 : binary_value(w, value, kinds[j]);
        if (done_here == 0) {
            if (is_list) {
                rc = 0; /* a Python call could change the list: the row encoder does it */
                goto done;
            }
            done_here = binary_fallback(w, PyTuple_GET_ITEM(encoders, j), value, j);
        }
        if (done_here <= 0) {
            rc = done_here;
            goto done;
        }
    }
    rc = 1;
done:
    Py_DECREF(values);
    return rc;
}

PyDoc_STRVAR(copy_binary_rows_doc,
"copy_binary_rows($module, rows, kinds, encoders, encode_row, /)\n"
"--\n"
"\n"
"The rows in COPY binary format (no header or trailer), as\n"
"b\"\".join(encode_row(row, i) for i, row in enumerate(rows)).\n"
"\n"
"kinds (bytes) has one _copy_binary.KIND_* code per column and encoders one Python\n"
"encoder per column (value -> bytes); values of the common kinds are encoded here,\n"
"anything unusual goes to the encoder, and a row with any problem to encode_row.");

static PyObject *
copy_binary_rows(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError,
                     "copy_binary_rows() takes exactly 4 positional arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *kinds_obj = args[1];
    PyObject *encoders = args[2];
    PyObject *encode_row = args[3];
    if (!PyBytes_Check(kinds_obj) || !PyTuple_Check(encoders) ||
        PyTuple_GET_SIZE(encoders) != PyBytes_GET_SIZE(kinds_obj)) {
        PyErr_SetString(PyExc_TypeError,
                        "copy_binary_rows: kinds must be bytes and encoders a tuple of as many");
        return NULL;
    }
    const Py_ssize_t ncols = PyBytes_GET_SIZE(kinds_obj);
    if (ncols > INT16_MAX) {
        PyErr_SetString(PyExc_ValueError, "copy_binary_rows: too many columns");
        return NULL;
    }
    const unsigned char *kinds = (const unsigned char *)PyBytes_AS_STRING(kinds_obj);
    int any_other = 0;
    for (Py_ssize_t j = 0; j < ncols; j++) {
        any_other |= kinds[j] == BK_OTHER;
    }
    PyObject *rows = PySequence_List(args[0]);
    if (rows == NULL) {
        return NULL;
    }
    Writer w;
    const Py_ssize_t count = PyList_GET_SIZE(rows);
    Py_ssize_t guess = 4096;
    if (count < PY_SSIZE_T_MAX / 64 / (ncols + 1)) {
        guess = Py_MAX(guess, count * (2 + 16 * ncols));
    }
    if (writer_init(&w, guess) < 0) {
        Py_DECREF(rows);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(rows); i++) {
        PyObject *row = Py_NewRef(PyList_GET_ITEM(rows, i));
        const Py_ssize_t row_start = w.len;
        int rc = binary_row(&w, row, kinds, encoders, ncols, any_other);
        if (rc == 0) {
            w.len = row_start;
            PyObject *index = PyLong_FromSsize_t(i);
            PyObject *data = NULL;
            if (index != NULL) {
                PyObject *call_args[2] = {row, index};
                data = PyObject_Vectorcall(encode_row, call_args, 2, NULL);
                Py_DECREF(index);
            }
            if (data == NULL) {
                rc = -1;
            }
            else if (!PyBytes_Check(data)) {
                PyErr_Format(PyExc_TypeError, "copy_binary_rows: encode_row returned %.200s, not bytes",
                             Py_TYPE(data)->tp_name);
                rc = -1;
            }
            else if (writer_reserve(&w, PyBytes_GET_SIZE(data)) < 0) {
                rc = -1;
            }
            else {
                memcpy(w.buf + w.len, PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data));
                w.len += PyBytes_GET_SIZE(data);
            }
            Py_XDECREF(data);
        }
        Py_DECREF(row);
        if (rc < 0) {
            Py_XDECREF(w.bytes);
            Py_DECREF(rows);
            return NULL;
        }
    }
    Py_DECREF(rows);
    if (_PyBytes_Resize(&w.bytes, w.len) < 0) {
        return NULL;
    }
    return w.bytes;
}

/* ------------------------------------------------------------------------------------ */
/* module                                                                               */

static PyMethodDef speedups_methods[] = {
    {"parse_data_rows", (PyCFunction)(void (*)(void))parse_data_rows, METH_FASTCALL,
     parse_data_rows_doc},
    {"format_copy_rows", (PyCFunction)(void (*)(void))format_copy_rows, METH_FASTCALL,
     format_copy_rows_doc},
    {"scan_reply", (PyCFunction)(void (*)(void))scan_reply, METH_FASTCALL, scan_reply_doc},
    {"copy_binary_rows", (PyCFunction)(void (*)(void))copy_binary_rows, METH_FASTCALL,
     copy_binary_rows_doc},
    {"encode_query", (PyCFunction)(void (*)(void))encode_query, METH_FASTCALL,
     encode_query_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "postgres_async._speedups",
    .m_doc = "Optional compiled twins of postgres_async's hot paths (see _accel.py).",
    .m_size = -1,
    .m_methods = speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    init_copy_escape();
    for (Py_ssize_t i = 0; i <= CACHED_COLUMN_NAMES; i++) {
        if (column_names[i] == NULL) {
            column_names[i] = PyUnicode_FromFormat("COPY column %zd", i);
            if (column_names[i] == NULL) {
                return NULL;
            }
        }
    }
    return PyModule_Create(&speedups_module);
}

/* graphc: the fixed C of a generated library's public wrappers (codegen/aot.py, c_source).
 *
 * Context and workspace checks, the weights file (header compared byte for byte, CRC-32 of
 * the params) and its reading and writing. The generated source pastes this text after it
 * has included the model's header, <fcntl.h>, <stdio.h>, <string.h>, <sys/stat.h> and
 * <unistd.h> (with _POSIX_C_SOURCE 200809L) and defined, for its model NAME:
 *
 *   GC_CTX                  NAME_ctx
 *   GC_FN(f)                NAME_##f (the public functions' names)
 *   GC_LIB_NAME             "NAME"
 *   GC_API                  the visibility attribute of a public function
 *   GC_PARAM_BYTES, GC_STATE_BYTES, GC_MIN_ALIGN, GC_WEIGHTS_FILE_BYTES
 *   GC_OK, GC_ERR_NULL, GC_ERR_BUFFER, GC_ERR_ALIGN, GC_ERR_WEIGHTS, GC_ERR_IO, GC_ERR_OVERLAP,
 *   GC_ERR_BUSY
 *   wheader[]               the weights file's header for this model (CRC field zero)
 *   GC_EMBEDDED_WEIGHTS     (optional) the symbol of the params built into the library
 *   GC_EMBEDDED_CRC         (optional) their CRC-32, checked by init (GC_ERR_WEIGHTS)
 *   GC_STATE_INIT           (optional) the symbol of the state's initial bytes
 *   GC_CPU_SUPPORTED        (optional) a function: 0 when this CPU cannot run the kernels;
 *                           every checked call then returns GC_ERR_CPU
 *
 * tests/test_aot.py compiles this file alone, with stand-ins for those names, under
 * -Wall -Wextra -Werror.
 */

static int misaligned(const void *p) {
    return ((uintptr_t)p % GC_MIN_ALIGN) != 0;
}

/* Whether the byte ranges [a, a + an) and [b, b + bn) share a byte (an empty one shares
   none). The kernels write outputs, the workspace, params and state while they still read
   the inputs, so a call given overlapping buffers would compute from half-written values. */
static int overlap(const void *a, int64_t an, const void *b, int64_t bn) {
    uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;
    return a && b && an > 0 && bn > 0 && pa < pb + (uintptr_t)bn && pb < pa + (uintptr_t)an;
}

/* Whether the array [p, p + bytes) of a call overlaps params, state (when with_state) or
   the first ws bytes of the workspace. */
static int overlaps_ctx(const GC_CTX *ctx, const void *p, int64_t bytes, int64_t ws, int with_state) {
    return overlap(p, bytes, ctx->params, GC_PARAM_BYTES) || overlap(p, bytes, ctx->workspace, ws) ||
           (with_state && overlap(p, bytes, ctx->state, GC_STATE_BYTES));
}

/* An output the kernels wrote as float32 whole numbers (an ONNX import's integer output) in
   the caller's int64_t (bytes 8) or int32_t (4) array, converted in place, as the Python
   side's runtime.model.as_declared: NaN gives 0, a value at or past the type's range its
   bound, any other its integer part. The float32 values fill the array's first count * 4
   bytes; it is walked from the end (int64_t element i covers floats 2i and 2i + 1, read
   before), bytes moved by memcpy (no aliasing of float and integer lvalues). */
__attribute__((unused)) static void gc_f32_to_int(void *p, int64_t count, int bytes) {
    unsigned char *b = (unsigned char *)p;
    double hi = bytes == 8 ? 9223372036854775807.0 : 2147483647.0;  /* 2**63 or 2**31 - 1 */
    for (int64_t i = count; i-- > 0;) {
        float v;
        int64_t w;
        memcpy(&v, b + 4 * i, sizeof v);
        if (v != v) w = 0;
        else if ((double)v >= hi) w = bytes == 8 ? INT64_MAX : INT32_MAX;
        else if ((double)v <= -hi - 1.0) w = bytes == 8 ? INT64_MIN : INT32_MIN;
        else w = (int64_t)v;
        if (bytes == 8) {
            memcpy(b + 8 * i, &w, sizeof w);
        } else {
            int32_t w32 = (int32_t)w;
            memcpy(b + 4 * i, &w32, sizeof w32);
        }
    }
}

/* An array whose batch N the caller holds at axis k > 0 (an ONNX file's sequence-first
   x [T, N, C], an LSTM's h_n [layers, N, H]), seen as [outer, n, inner] (outer: the product
   of the axes before N, inner: of those after it), copied to or from the kernels' N-first
   [n, outer, inner] (to_first: caller -> kernels), one run of inner elements of bytes each
   at a time. */
__attribute__((unused)) static void gc_move_batch(void *dst, const void *src, int64_t n, int64_t outer,
                                                  int64_t inner, int64_t bytes, int to_first) {
    char *d = (char *)dst;
    const char *s = (const char *)src;
    size_t run = (size_t)(inner * bytes);
    for (int64_t a = 0; a < outer; a++) {
        for (int64_t r = 0; r < n; r++) {
            int64_t first = (r * outer + a) * inner * bytes, moved = (a * n + r) * inner * bytes;
            memcpy(d + (to_first ? first : moved), s + (to_first ? moved : first), run);
        }
    }
}

#include <stdarg.h>
/* The message NAME_last_error returns: what the last call of this thread that failed found
   (for an input check: the input, the row, the value and the rule), set by gc_note (the
   generated explainers) or else by gc_noted from the code's NAME_strerror text. */
static __thread char gc_message[1024];
static __thread int gc_explained;
__attribute__((unused, format(printf, 1, 2))) static void gc_note(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(gc_message, sizeof gc_message, fmt, ap);
    va_end(ap);
    gc_explained = 1;
}
/* rc, after noting fn's failure (when rc is not GC_OK and no explainer described it). */
static int gc_noted(const char *fn, int rc) {
    if (rc != GC_OK && !gc_explained) snprintf(gc_message, sizeof gc_message, "%s: %s", fn, GC_FN(strerror)(rc));
    gc_explained = 0;
    return rc;
}
GC_API const char *GC_FN(last_error)(void) {
    return gc_message;
}
/* The contexts calls are running on now (one ctx used by two threads at once would have both
   calls write its workspace, params and state: a corrupt arena). A call enters its ctx here
   first and leaves it when done; a second call on a ctx already in the table gets
   GC_ERR_BUSY with nothing written. The table is read and changed under a spin lock held for
   a scan of GC_BUSY_SLOTS pointers (tens of nanoseconds); with every slot taken (that many
   calls running at once) a call runs untracked. GCC/Clang __atomic builtins. */
#define GC_BUSY_SLOTS 64
static const void *busy_ctx[GC_BUSY_SLOTS];
static int busy_lock;
/* The slot ctx entered (to pass to leave_ctx), GC_BUSY_SLOTS when untracked (NULL ctx, or a
   full table), or -1 when a call on ctx is running. */
static int enter_ctx(const void *ctx) {
    int i, free_at = GC_BUSY_SLOTS, running = 0;
    if (!ctx) return GC_BUSY_SLOTS;
    while (__atomic_exchange_n(&busy_lock, 1, __ATOMIC_ACQUIRE))
        while (__atomic_load_n(&busy_lock, __ATOMIC_RELAXED)) {
        }
    for (i = 0; i < GC_BUSY_SLOTS; i++) {
        const void *p = __atomic_load_n(&busy_ctx[i], __ATOMIC_RELAXED);
        if (p == ctx) running = 1;
        else if (!p && free_at == GC_BUSY_SLOTS) free_at = i;
    }
    if (!running && free_at < GC_BUSY_SLOTS) __atomic_store_n(&busy_ctx[free_at], ctx, __ATOMIC_RELAXED);
    __atomic_store_n(&busy_lock, 0, __ATOMIC_RELEASE);
    return running ? -1 : free_at;
}
static void leave_ctx(int slot) {
    if (slot >= 0 && slot < GC_BUSY_SLOTS) __atomic_store_n(&busy_ctx[slot], (const void *)0, __ATOMIC_RELEASE);
}
/* ctx and its params exist, are large enough and aligned; so does state when need_state is 1
   (the training entries), and when given when need_state is 2 (an infer that reads state:
   given none, it reads the library's image of the state). */
static int check_ctx(const GC_CTX *ctx, int need_state) {
#ifdef GC_CPU_SUPPORTED
    if (!GC_CPU_SUPPORTED()) return GC_ERR_CPU;
#endif
    if (!ctx) return GC_ERR_NULL;
    if (need_state == 2) need_state = ctx->state != NULL;
    if (!ctx->params && GC_PARAM_BYTES > 0) return GC_ERR_NULL;
    if (need_state && !ctx->state && GC_STATE_BYTES > 0) return GC_ERR_NULL;
    if (ctx->params_bytes < GC_PARAM_BYTES) return GC_ERR_BUFFER;
    if (need_state && ctx->state_bytes < GC_STATE_BYTES) return GC_ERR_BUFFER;
    if (misaligned(ctx->params) || (need_state && misaligned(ctx->state))) return GC_ERR_ALIGN;
    if (need_state && overlap(ctx->params, GC_PARAM_BYTES, ctx->state, GC_STATE_BYTES)) return GC_ERR_OVERLAP;
    return GC_OK;
}

/* The workspace exists, holds need bytes, is aligned and overlaps neither params nor (when
   need_state) state. */
static int check_workspace(const GC_CTX *ctx, int64_t need, int need_state) {
    if (need > 0 && !ctx->workspace) return GC_ERR_NULL;
    if (ctx->workspace_bytes < need) return GC_ERR_BUFFER;
    if (misaligned(ctx->workspace)) return GC_ERR_ALIGN;
    if (overlaps_ctx(ctx, ctx->workspace, need, 0, need_state)) return GC_ERR_OVERLAP;
    return GC_OK;
}

/* zlib's CRC-32 (reflected polynomial 0xEDB88320), bitwise: no table, no global state. */
static uint32_t crc32_update(uint32_t crc, const unsigned char *p, int64_t len) {
    int64_t i;
    int k;
    crc = ~crc;
    for (i = 0; i < len; i++) {
        crc ^= p[i];
        for (k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

#define CRC_AT 28

/* Weights files hold little-endian values (byte 32 of the header says so). */
static int little_endian(void) {
    const uint32_t one = 1;
    return *(const unsigned char *)&one == 1;
}

/* Compares len bytes of a file header at byte offset off with ours (CRC field skipped). */
static int header_matches(const unsigned char *p, int64_t off, int64_t len) {
    int64_t i;
    for (i = 0; i < len; i++) {
        int64_t at = off + i;
        if (at >= CRC_AT && at < CRC_AT + 4) continue;
        if (p[i] != wheader[at]) return 0;
    }
    return 1;
}

static int init_ctx(GC_CTX *ctx) {
    int rc = check_ctx(ctx, 0);
    if (rc) return rc;
    if (ctx->state && (ctx->state_bytes < GC_STATE_BYTES)) return GC_ERR_BUFFER;
    if (ctx->state && misaligned(ctx->state)) return GC_ERR_ALIGN;
    if (ctx->state && overlap(ctx->params, GC_PARAM_BYTES, ctx->state, GC_STATE_BYTES)) return GC_ERR_OVERLAP;
#ifdef GC_EMBEDDED_WEIGHTS
#ifdef GC_EMBEDDED_CRC
    if (crc32_update(0, GC_EMBEDDED_WEIGHTS, GC_PARAM_BYTES) != GC_EMBEDDED_CRC) return GC_ERR_WEIGHTS;
#endif
    memcpy(ctx->params, GC_EMBEDDED_WEIGHTS, (size_t)GC_PARAM_BYTES);
#else
    memset(ctx->params, 0, (size_t)GC_PARAM_BYTES);
#endif
    if (ctx->state) {
#ifdef GC_STATE_INIT
        memcpy(ctx->state, GC_STATE_INIT, (size_t)GC_STATE_BYTES);
#else
        memset(ctx->state, 0, (size_t)GC_STATE_BYTES);
#endif
    }
    return GC_OK;
}

static int read_weights(GC_CTX *ctx, const void *data, int64_t len) {
    const unsigned char *p = (const unsigned char *)data;
    int rc = check_ctx(ctx, 0);
    if (rc) return rc;
    if (!data) return GC_ERR_NULL;
    if (len != GC_WEIGHTS_FILE_BYTES || !little_endian()) return GC_ERR_WEIGHTS;
    if (overlap(data, len, ctx->params, GC_PARAM_BYTES)) return GC_ERR_OVERLAP;
    if (!header_matches(p, 0, (int64_t)sizeof wheader)) return GC_ERR_WEIGHTS;
    if (crc32_update(0, p + sizeof wheader, GC_PARAM_BYTES) != le32(p + CRC_AT)) return GC_ERR_WEIGHTS;
    memcpy(ctx->params, p + sizeof wheader, (size_t)GC_PARAM_BYTES);
    return GC_OK;
}

/* The weights file, opened only when it is a regular file: O_NONBLOCK so that a FIFO
   cannot block the open (it is then refused, as a directory or a device is). */
static FILE *open_regular(const char *path) {
    struct stat st;
    FILE *f;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return NULL;
    }
    f = fdopen(fd, "rb");
    if (!f) close(fd);
    return f;
}

static int load_weights(GC_CTX *ctx, const char *path) {
    unsigned char buf[4096];
    FILE *f;
    int64_t off = 0, left;
    uint32_t want = 0, crc = 0;
    int rc = check_ctx(ctx, 0);
    if (rc) return rc;
    if (!path) return GC_ERR_NULL;
    if (!little_endian()) return GC_ERR_WEIGHTS;
    f = open_regular(path);
    if (!f) return GC_ERR_IO;
    /* pass 1: header and CRC, params untouched */
    while (off < (int64_t)sizeof wheader) {
        size_t want_n = sizeof wheader - (size_t)off < sizeof buf ? sizeof wheader - (size_t)off : sizeof buf;
        size_t got = fread(buf, 1, want_n, f);
        if (got != want_n || !header_matches(buf, off, (int64_t)got)) goto bad;
        if (off <= CRC_AT && off + (int64_t)got >= CRC_AT + 4) want = le32(buf + (CRC_AT - off));
        off += (int64_t)got;
    }
    for (left = GC_PARAM_BYTES; left > 0;) {
        size_t want_n = left < (int64_t)sizeof buf ? (size_t)left : sizeof buf;
        size_t got = fread(buf, 1, want_n, f);
        if (got != want_n) goto bad;
        crc = crc32_update(crc, buf, (int64_t)got);
        left -= (int64_t)got;
    }
    if (crc != want || fgetc(f) != EOF) goto bad;
    /* pass 2: the checked bytes into params */
    if (fseek(f, (long)sizeof wheader, SEEK_SET) != 0) goto io;
    if (fread(ctx->params, 1, (size_t)GC_PARAM_BYTES, f) != (size_t)GC_PARAM_BYTES) goto changed;
    if (crc32_update(0, (const unsigned char *)ctx->params, GC_PARAM_BYTES) != want) goto changed;
    fclose(f);
    return GC_OK;
changed:
    memset(ctx->params, 0, (size_t)GC_PARAM_BYTES);
bad:
    fclose(f);
    return GC_ERR_WEIGHTS;
io:
    fclose(f);
    return GC_ERR_IO;
}

static int write_weights(const GC_CTX *ctx, void *out, int64_t len) {
    unsigned char *p = (unsigned char *)out;
    uint32_t crc;
    int rc = check_ctx(ctx, 0);
    if (rc) return rc;
    if (!out) return GC_ERR_NULL;
    if (len < GC_WEIGHTS_FILE_BYTES) return GC_ERR_BUFFER;
    if (overlap(out, GC_WEIGHTS_FILE_BYTES, ctx->params, GC_PARAM_BYTES)) return GC_ERR_OVERLAP;
    crc = crc32_update(0, (const unsigned char *)ctx->params, GC_PARAM_BYTES);
    memcpy(p, wheader, sizeof wheader);
    p[CRC_AT] = (unsigned char)(crc & 0xff);
    p[CRC_AT + 1] = (unsigned char)((crc >> 8) & 0xff);
    p[CRC_AT + 2] = (unsigned char)((crc >> 16) & 0xff);
    p[CRC_AT + 3] = (unsigned char)((crc >> 24) & 0xff);
    memcpy(p + sizeof wheader, ctx->params, (size_t)GC_PARAM_BYTES);
    return GC_OK;
}
/* The public functions on a ctx: one call at a time per ctx (enter_ctx). */
GC_API int GC_FN(init)(GC_CTX *ctx) {
    int slot = enter_ctx(ctx), rc;
    if (slot < 0) return gc_noted(GC_LIB_NAME "_init", GC_ERR_BUSY);
    rc = init_ctx(ctx);
    leave_ctx(slot);
    return gc_noted(GC_LIB_NAME "_init", rc);
}
GC_API int GC_FN(read_weights)(GC_CTX *ctx, const void *data, int64_t len) {
    int slot = enter_ctx(ctx), rc;
    if (slot < 0) return gc_noted(GC_LIB_NAME "_read_weights", GC_ERR_BUSY);
    rc = read_weights(ctx, data, len);
    leave_ctx(slot);
    return gc_noted(GC_LIB_NAME "_read_weights", rc);
}
GC_API int GC_FN(load_weights)(GC_CTX *ctx, const char *path) {
    int slot = enter_ctx(ctx), rc;
    if (slot < 0) return gc_noted(GC_LIB_NAME "_load_weights", GC_ERR_BUSY);
    rc = load_weights(ctx, path);
    leave_ctx(slot);
    return gc_noted(GC_LIB_NAME "_load_weights", rc);
}
GC_API int GC_FN(write_weights)(const GC_CTX *ctx, void *out, int64_t len) {
    int slot = enter_ctx(ctx), rc;
    if (slot < 0) return gc_noted(GC_LIB_NAME "_write_weights", GC_ERR_BUSY);
    rc = write_weights(ctx, out, len);
    leave_ctx(slot);
    return gc_noted(GC_LIB_NAME "_write_weights", rc);
}

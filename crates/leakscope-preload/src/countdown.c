/* Each thread's sampling countdown, in initial-exec TLS.
 *
 * Rust has no stable way to choose a thread-local's TLS model, and a cdylib's
 * thread-locals use the general-dynamic model: every access calls
 * __tls_get_addr. A library loaded with LD_PRELOAD is part of the initial
 * set, so its variables can live in the static TLS block and be reached at
 * a fixed offset from the thread pointer (initial-exec). hooks.rs reads and
 * writes this variable with two instructions of inline assembly through the
 * offset the dynamic linker stores in the GOT. The first allocation of
 * every thread finds it at -1 and takes the slow path, which sets it. */
__thread long leakscope_preload_countdown
    __attribute__((tls_model("initial-exec"), visibility("hidden"))) = -1;

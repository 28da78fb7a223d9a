/* The target of the out-of-process tests (tests/outside.rs): known values
 * at known addresses, planted heap blocks, and threads in each state an
 * attach meets (user code, a restartable read, a timed sleep). It prints
 * one line of addresses, then serves commands on stdin:
 *   ping N  -> "pong N sum=S vec=V spin=K"  (S: a checksum of the planted
 *             block; V: times the spinner found its vector registers
 *             changed behind its back, which must stay 0)
 *   wake    -> the sleeper thread's read returns; it answers "woke M"
 *   leakcheck -> under Valgrind (built with -DWITH_VALGRIND), its leak
 *             check now; answers "checked"
 *   quit
 * SPIN=0 in the environment leaves out the spinning thread, so that every
 * thread sleeps in a system call. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#ifdef WITH_VALGRIND
#include <valgrind/memcheck.h>
#endif

#define PLANTED_WORDS 512
uint64_t *planted;                        /* a static holding a heap block */
uint64_t magic = 0x6c65616b73636f70ULL;   /* "leakscop" */
volatile uint64_t spin_count;
static int wake_pipe[2];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ready_cond = PTHREAD_COND_INITIALIZER;
static int ready_threads;
static char sleeper_info[256], spinner_info[128];

static void say(const char *text) {
    /* One write per line: threads answer on the same pipe. */
    if (write(1, text, strlen(text)) < 0) _exit(3);
}

static void arrived(void) {
    pthread_mutex_lock(&lock);
    ready_threads++;
    pthread_cond_broadcast(&ready_cond);
    pthread_mutex_unlock(&lock);
}

static void *sleeper(void *arg) {
    (void)arg;
    volatile uint64_t marker = 0x57ac4ed0000000deULL;   /* on this stack */
    uint64_t *volatile held = malloc(200);               /* held by the stack only */
    held[0] = 0xb10cb10cb10cb10cULL;
    snprintf(sleeper_info, sizeof sleeper_info,
             "sleeper_tid=%ld sleeper_tp=%lx marker=%lx sleeper_block=%lx",
             (long)syscall(SYS_gettid), (unsigned long)pthread_self(),
             (unsigned long)&marker, (unsigned long)held);
    arrived();
    for (;;) {
        char c;
        if (read(wake_pipe[0], &c, 1) != 1) {
            say("sleeper read failed\n");
            _exit(4);
        }
        char line[64];
        snprintf(line, sizeof line, "woke %lx %lx\n", (unsigned long)marker,
                 (unsigned long)held[0]);
        say(line);
    }
    return NULL;
}

/* The spinner keeps a pattern in vector registers while it counts, in
 * the upper half of a YMM register and (with AVX-512) in ZMM16, which
 * glibc's string functions use: an attach that stops it there must give
 * every bit back. */
static const uint64_t vector_pattern = 0x5eed5eed12345678ULL;
volatile uint64_t vector_faults;

__attribute__((target("avx2"))) static int ymm_kept(void) {
    unsigned int mask;
    __asm__ volatile(
        "vpbroadcastq %1, %%ymm15\n\t"
        "mov $20000, %%ecx\n"
        "1:\n\t"
        "dec %%ecx\n\t"
        "jnz 1b\n\t"
        "vpbroadcastq %1, %%ymm14\n\t"
        "vpcmpeqq %%ymm14, %%ymm15, %%ymm14\n\t"
        "vpmovmskb %%ymm14, %0\n\t"
        "vzeroupper"
        : "=r"(mask)
        : "m"(vector_pattern)
        : "ecx", "xmm14", "xmm15", "cc");
    return mask == 0xffffffffu;
}

__attribute__((target("avx512f"))) static int zmm_kept(void) {
    unsigned int mask;
    __asm__ volatile(
        "vpbroadcastq %1, %%zmm16\n\t"
        "mov $20000, %%ecx\n"
        "1:\n\t"
        "dec %%ecx\n\t"
        "jnz 1b\n\t"
        "vpbroadcastq %1, %%zmm17\n\t"
        "vpcmpeqq %%zmm17, %%zmm16, %%k1\n\t"
        "kmovw %%k1, %0"
        : "=r"(mask)
        : "m"(vector_pattern)
        : "ecx", "xmm16", "xmm17", "k1", "cc");
    return (mask & 0xff) == 0xff;
}

static void *spinner(void *arg) {
    (void)arg;
    snprintf(spinner_info, sizeof spinner_info, " spinner_tid=%ld spinner_tp=%lx",
             (long)syscall(SYS_gettid), (unsigned long)pthread_self());
    arrived();
    int avx2 = __builtin_cpu_supports("avx2"), avx512 = __builtin_cpu_supports("avx512f");
    for (;;) {
        spin_count++;
        if (avx2 && !ymm_kept()) vector_faults++;
        if (avx512 && !zmm_kept()) vector_faults++;
    }
    return NULL;
}

static void *napper(void *arg) {
    (void)arg;
    arrived();
    for (;;) usleep(200000);
    return NULL;
}

/* Planted leaks, the same in every run (Valgrind's figures for them are
 * known): definitely lost, 777 bytes; a lost list head (48 bytes,
 * definitely lost) whose next node (56 bytes) is indirectly lost; a block
 * reached only through a pointer 16 bytes into it (640 bytes, possibly
 * lost). */
char *interior;
/* Blocks that shape the heap around the freed ones; held, not leaks. */
void *gap, *fence;
struct node { struct node *next; char pad[40]; };
void *volatile sink;

__attribute__((noinline)) static void plant_leaks(void) {
    sink = malloc(777);
    memset(sink, 1, 777);
    struct node *head = malloc(sizeof *head);
    head->next = malloc(56);
    sink = head;
    interior = (char *)malloc(640) + 16;
    sink = NULL;
}

/* Overwrites the stack below the caller, where the planted pointers were. */
__attribute__((noinline)) static void scrub_stack(void) {
    /* Volatile stores: a memset of a dead array would be optimised away. */
    volatile char area[16384];
    for (size_t i = 0; i < sizeof area; i++) area[i] = 0;
}

__attribute__((noinline)) static void start_threads(int spin) {
    pthread_t t;
    int threads = 2 + spin;
    pthread_create(&t, NULL, sleeper, NULL);
    pthread_create(&t, NULL, napper, NULL);
    if (spin) pthread_create(&t, NULL, spinner, NULL);
    pthread_mutex_lock(&lock);
    while (ready_threads < threads) pthread_cond_wait(&ready_cond, &lock);
    pthread_mutex_unlock(&lock);
}

int main(void) {
    int spin = !(getenv("SPIN") && strcmp(getenv("SPIN"), "0") == 0);
    if (pipe(wake_pipe) != 0) return 2;
    planted = malloc(PLANTED_WORDS * 8);
    for (int i = 0; i < PLANTED_WORDS; i++) planted[i] = 0x1000 + i;
    /* Threads first: their TLS vectors must not take the place of the
     * freed blocks below (whose addresses this stack keeps), and a thread
     * starts with a copy of its creator's registers, which must not hold
     * the planted leaks. */
    start_threads(spin);
    plant_leaks();
    scrub_stack();
    /* Blocks of known sizes, kept (in a static array) and freed (into the
     * tcache and the bins; a size nothing else here asks for, so that the
     * freed addresses stay free). */
    static size_t sizes[] = {24, 100, 1000, 5000, 300000};
    static void *kept[5];
    void *freed[4];
    unsigned long freed_at[5];
    for (int i = 0; i < 5; i++) memset(kept[i] = malloc(sizes[i]), 0x5a, sizes[i]);
    for (int i = 0; i < 4; i++) freed[i] = malloc(904);
    gap = malloc(2000);
    void *binned = malloc(3000);
    fence = malloc(40);
    for (int i = 0; i < 4; i++) freed_at[i] = (unsigned long)freed[i];
    freed_at[4] = (unsigned long)binned;
    for (int i = 0; i < 4; i++) free(freed[i]);
    free(binned);


    char line[2048];
    int n = snprintf(line, sizeof line,
        "pid=%d main_tp=%lx planted_var=%lx planted=%lx magic_var=%lx interior_var=%lx %s%s freed=%lx,%lx,%lx,%lx binned=%lx kept=",
        getpid(), (unsigned long)pthread_self(), (unsigned long)&planted,
        (unsigned long)planted, (unsigned long)&magic, (unsigned long)&interior, sleeper_info, spin ? spinner_info : "",
        freed_at[0], freed_at[1], freed_at[2], freed_at[3], freed_at[4]);
    for (int i = 0; i < 5; i++)
        n += snprintf(line + n, sizeof line - n, "%s%lx:%zu", i ? "," : "",
                      (unsigned long)kept[i], sizes[i]);
    snprintf(line + n, sizeof line - n, "\n");
    say(line);

    char command[64];
    while (fgets(command, sizeof command, stdin)) {
        if (strncmp(command, "ping", 4) == 0) {
            uint64_t sum = 0;
            for (int i = 0; i < PLANTED_WORDS; i++) sum += planted[i];
            char out[128];
            snprintf(out, sizeof out, "pong %ld sum=%lu vec=%lu spin=%lu\n",
                     strtol(command + 5, NULL, 10), (unsigned long)sum,
                     (unsigned long)vector_faults, (unsigned long)spin_count);
            say(out);
        } else if (strncmp(command, "wake", 4) == 0) {
            if (write(wake_pipe[1], "w", 1) != 1) return 5;
        } else if (strncmp(command, "leakcheck", 9) == 0) {
#ifdef WITH_VALGRIND
            VALGRIND_DO_LEAK_CHECK;
#endif
            say("checked\n");
        } else if (strncmp(command, "quit", 4) == 0) {
            return 0;
        }
    }
    return 0;
}

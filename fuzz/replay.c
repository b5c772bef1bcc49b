/* Replays inputs through a fuzz target without libFuzzer, so the seed corpus and every crash the fuzzers ever
 * found (fuzz/regressions/) run in the normal `meson test` with any compiler, under ASan and valgrind too.
 * Arguments: files or directories (each regular file in a directory is one input). */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "fuzz_common.h"

/* A parser that believes a small file's sizes could ask for gigabytes.  The targets treat LENET_ENOMEM from a
 * small input as a bug; for an allocation that large to fail instead of eating the machine, the address space is
 * capped here (sanitizer runtimes reserve terabytes of it, so under ASan the allocator is told to refuse large
 * requests instead, and under TSan or valgrind nothing is capped). */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define REPLAY_ASAN 1
#endif
#if __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define REPLAY_OTHER_SANITIZER 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define REPLAY_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#define REPLAY_OTHER_SANITIZER 1
#endif

#ifdef REPLAY_ASAN
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1:max_allocation_size_mb=2048";
}
#endif

static void cap_memory(void)
{
#if !defined(REPLAY_ASAN) && !defined(REPLAY_OTHER_SANITIZER)
    const char *preload = getenv("LD_PRELOAD");
    if (preload && strstr(preload, "vgpreload"))
        return; /* valgrind */
    struct rlimit limit = {(rlim_t)4 << 30, (rlim_t)4 << 30};
    setrlimit(RLIMIT_AS, &limit);
#endif
}

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        return -1;
    }
    size_t cap = 4096, size = 0, got;
    unsigned char *buf = malloc(cap);
    while (buf && (got = fread(buf + size, 1, cap - size, f)) > 0) {
        size += got;
        if (size == cap) {
            unsigned char *grown = realloc(buf, cap * 2);
            if (!grown) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = grown;
            cap *= 2;
        }
    }
    fclose(f);
    if (!buf) {
        fprintf(stderr, "replay: out of memory reading %s\n", path);
        return -1;
    }
    LLVMFuzzerTestOneInput(buf, size);
    free(buf);
    return 1;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Returns the number of inputs run, or -1 on an error. */
static int run_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "replay: %s does not exist\n", path);
        return -1;
    }
    if (!S_ISDIR(st.st_mode))
        return run_file(path);
    DIR *dir = opendir(path);
    if (!dir)
        return -1;
    char **names = NULL;
    size_t count = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char **grown = realloc(names, (count + 1) * sizeof *names);
        if (!grown)
            break;
        names = grown;
        names[count] = malloc(strlen(path) + strlen(e->d_name) + 2);
        if (!names[count])
            break;
        sprintf(names[count], "%s/%s", path, e->d_name);
        count++;
    }
    closedir(dir);
    if (count > 1)
        qsort(names, count, sizeof *names, compare_names);
    int total = 0;
    for (size_t i = 0; i < count; i++) {
        struct stat fst;
        if (total >= 0 && stat(names[i], &fst) == 0 && S_ISREG(fst.st_mode)) {
            int r = run_file(names[i]);
            total = r < 0 ? -1 : total + r;
        }
        free(names[i]);
    }
    free(names);
    return total;
}

int main(int argc, char **argv)
{
    cap_memory();
    int total = 0;
    for (int i = 1; i < argc; i++) {
        int r = run_path(argv[i]);
        if (r < 0)
            return 1;
        total += r;
    }
    printf("replayed %d inputs without a crash\n", total);
    return 0;
}

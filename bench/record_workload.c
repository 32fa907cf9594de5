/* Syscall-heavy load for bench/record_bench.
 *   record_workload mix N FORKS DIR   N x (openat+read+close) of DIR/f, then FORKS x fork+exec(/bin/true)
 *   record_workload flood N           N x close(-1): the cheapest traced syscall, to find throughput
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int mix(long n, long forks, const char *dir)
{
    char path[4096], buf[64];
    snprintf(path, sizeof(path), "%s/f", dir);
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
    if (fd < 0 || write(fd, "benchmark\n", 10) != 10)
        return 1;
    close(fd);
    for (long i = 0; i < n; i++) {
        fd = openat(AT_FDCWD, path, O_RDONLY);
        if (fd < 0 || read(fd, buf, sizeof(buf)) < 0)
            return 1;
        close(fd);
    }
    for (long i = 0; i < forks; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            execl("/bin/true", "true", (char *)NULL);
            _exit(127);
        }
        int status;
        if (pid < 0 || waitpid(pid, &status, 0) < 0 || status != 0)
            return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 5 && !strcmp(argv[1], "mix"))
        return mix(atol(argv[2]), atol(argv[3]), argv[4]);
    if (argc == 3 && !strcmp(argv[1], "flood")) {
        for (long i = 0, n = atol(argv[2]); i < n; i++)
            close(-1);
        return 0;
    }
    fprintf(stderr, "usage: %s mix N FORKS DIR | flood N\n", argv[0]);
    return 2;
}

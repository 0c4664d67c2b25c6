/*
 * cordon-supervise: the sandbox init's child that keeps the agent running. The init (tini) runs
 *   /.cordon/supervise /.cordon/agent serve
 * and this program starts that command, starts it again a second after it exits (a crashed or
 * killed agent never takes the sandbox down), and on SIGTERM, SIGINT or SIGHUP passes the signal on
 * and exits.
 *
 * Why C and not the agent's own Go: it idles in every sandbox, and a second Go runtime costs about
 * 1.8 MiB resident there; this costs a few pages. Why not a shell loop: a shell exits when a fork
 * fails (a fork bomb filling the pids limit); here a failed fork is tried again a second later.
 * Every wait is sigtimedwait on blocked signals, so there is no handler and no race between a
 * signal and the wait.
 *
 * Its stdio, and the agent's, are /dev/null: the init's own would reach a log file on the host.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const long RESTART_DELAY_MS = 1000;

static long now_ms(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * 0-2 become /dev/null (opened without O_CLOEXEC: when 0, 1 or 2 was closed the open takes that number,
 * and dup2 onto itself would leave the flag on, so the program would start without it), and every other
 * descriptor it was given is closed at exec: the agent starts with 0-2 only, as under the Go supervisor.
 */
static void stdio_to_null(void) {
	int fd = open("/dev/null", O_RDWR);
	if (fd >= 0) {
		for (int i = 0; i < 3; i++) dup2(fd, i);
		if (fd > 2) close(fd);
	}
	DIR *d = opendir("/proc/self/fd");
	if (!d) return;
	struct dirent *e;
	while ((e = readdir(d))) {
		int n = atoi(e->d_name);
		if (n > 2 && n != dirfd(d)) fcntl(n, F_SETFD, FD_CLOEXEC);
	}
	closedir(d);
}

/*
 * Starts the command with the signal mask the supervisor was given and the stop signals it passes on
 * at their default action (whatever it inherited); 0 when the fork failed.
 */
static pid_t start(char **argv, const sigset_t *orig) {
	pid_t pid = fork();
	if (pid == 0) {
		signal(SIGTERM, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		sigprocmask(SIG_SETMASK, orig, NULL);
		execv(argv[0], argv);
		_exit(127);
	}
	return pid > 0 ? pid : 0;
}

int main(int argc, char **argv) {
	if (argc < 2) {
		fputs("usage: cordon-supervise PROGRAM [ARG...]\n", stderr);
		return 2;
	}
	stdio_to_null();
	sigset_t set, orig;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigprocmask(SIG_BLOCK, &set, &orig);

	pid_t child = start(argv + 1, &orig);
	long restart_at = child ? 0 : now_ms() + RESTART_DELAY_MS;
	for (;;) {
		long wait_ms = 60000;
		if (!child) {
			long left = restart_at - now_ms();
			if (left <= 0) {
				child = start(argv + 1, &orig);
				if (!child) restart_at = now_ms() + RESTART_DELAY_MS;
				continue;
			}
			wait_ms = left;
		}
		struct timespec timeout = {wait_ms / 1000, (wait_ms % 1000) * 1000000};
		siginfo_t info;
		int sig = sigtimedwait(&set, &info, &timeout);
		if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP) {
			if (child) kill(child, sig);
			return 0;
		}
		if (sig == SIGCHLD) {
			/* Reap every child that ended; SIGCHLDs that arrive together are merged into one. */
			pid_t pid;
			while ((pid = waitpid(-1, NULL, WNOHANG)) > 0) {
				if (pid == child) {
					child = 0;
					restart_at = now_ms() + RESTART_DELAY_MS;
				}
			}
		}
		/* A timeout or EINTR just goes round again. */
	}
}

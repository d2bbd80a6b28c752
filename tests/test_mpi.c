/* test_mpi.c - data-parallel training over MPI, as a user runs it: `mpirun -np 2 build/ft-mpi train`
   on this machine (loopback), beside `build/ft train` in one process with the same global batch
   (--batch 2 --grad-accum 2 vs 2 ranks x --batch 2). On a tiny model with SmolLM2's tokenizer
   ($FT_MODEL), the project's data, LoRA:
   - SFT (the demo's data, dropout 0.1), DPO (the date preferences) and GRPO (arithmetic prompts,
     sampled completions, a regex reward): the 2-rank run logs the one-process run's losses at
     every one of 20 steps, and writes the same adapter; --zero1 the same again;
   - a rank killed with SIGKILL in the middle of a run ends the job within seconds with mpirun's
     message; `--resume` on 2 ranks continues from the last checkpoint on the uninterrupted curve;
   - a rank per (emulated) GPU: the losses and the adapter of one process on the device.
   Needs $FT_MPI_BIN (make test builds build/ft-mpi when mpicc is there; .ci/run installs OpenMPI):
   without it, the test says so and checks nothing. */
#define _POSIX_C_SOURCE 200809L          /* fork, kill, nanosleep, dirent */
#include "../finetune.h"
#include "ft_test.h"
#include "tiny_model.h"
#include <dirent.h>
#include <stdarg.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

static const char *MODEL = "build/tiny_mpi.gguf";
static const char *ft_bin, *mpi_bin;
enum { STEPS = 20, LONG_STEPS = 60, MAXS = 64 };

static const char *MPIRUN = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 "
                            "OMPI_MCA_btl_vader_single_copy_mechanism=none mpirun -np 2";

/* the objectives, their data and options */
static const struct { const char *name, *args; } OBJ[] = {
    {"sft", "--objective sft --dropout 0.1 --data examples/data/dates_train.jsonl"},
    {"dpo", "--objective dpo --data examples/data/dates_pref_train.jsonl"},
    {"grpo", "--objective grpo --data examples/data/arith_train.jsonl --reward regex:e --prompts 2 --group 3 --max-new 6 --kl-beta 0.04"},
};
/* the common options of every run: 1 thread a rank, LoRA, checkpoints every 5 steps */
static void train_args(char *buf, size_t cap, int obj, const char *out, int steps, int accum, const char *extra) {
    snprintf(buf, cap, "train -m %s --method lora --rank 4 --alpha 8 %s --seq-len 96 --steps %d --batch 2 --grad-accum %d --lr 3e-3 --warmup 2 "
             "--seed 11 --threads 1 --eval-before 0 --eval-gen 0 --save-every 5 --out %s %s", MODEL, OBJ[obj].args, steps, accum, out, extra);
}
static int sh(const char *fmt, ...) {
    char cmd[4096]; va_list ap; int rc;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + (WIFSIGNALED(rc) ? WTERMSIG(rc) : 0);
}
/* the losses of OUT/metrics.jsonl by step (NaN where a step is missing); the number of lines */
static int read_losses(const char *out, double *loss, int *ranks) {
    char path[512], line[4096]; FILE *f; int n = 0, s;
    for (s = 0; s < MAXS; s++) loss[s] = NAN;
    snprintf(path, sizeof path, "%s/metrics.jsonl", out);
    if (!(f = fopen(path, "r"))) return 0;
    while (fgets(line, sizeof line, f)) {
        long long st; double l; const char *p = strstr(line, "\"loss\": "), *r = strstr(line, "\"ranks\": ");
        if (sscanf(line, "{\"step\": %lld", &st) == 1 && p && sscanf(p + 8, "%lf", &l) == 1 && st >= 0 && st < MAXS) loss[st] = l;
        if (ranks && r) *ranks = atoi(r + 9);
        n++;
    }
    fclose(f);
    return n;
}

static void two_ranks_log_the_losses_of_one_process(int obj) {
    char args[2048], one_dir[64], two_dir[64], z_dir[64]; double one[MAXS], two[MAXS], z[MAXS]; int s, ranks = 0, same = 1, samez = 1;
    const char *name = OBJ[obj].name;
    snprintf(one_dir, sizeof one_dir, "build/mpi_one_%s", name);
    snprintf(two_dir, sizeof two_dir, "build/mpi_two_%s", name);
    snprintf(z_dir, sizeof z_dir, "build/mpi_zero_%s", name);
    train_args(args, sizeof args, obj, one_dir, STEPS, 2, "");
    CHECK(sh("%s %s > %s.log 2>&1", ft_bin, args, one_dir) == 0, "%s: one process trains (%s.log)", name, one_dir);
    train_args(args, sizeof args, obj, two_dir, STEPS, 1, "");
    CHECK(sh("%s %s %s > %s.log 2>&1", MPIRUN, mpi_bin, args, two_dir) == 0, "%s: 2 ranks train (%s.log)", name, two_dir);
    train_args(args, sizeof args, obj, z_dir, STEPS, 1, "--zero1");
    CHECK(sh("%s %s %s > %s.log 2>&1", MPIRUN, mpi_bin, args, z_dir) == 0, "%s: 2 ranks with ZeRO-1 train", name);
    CHECK(read_losses(one_dir, one, NULL) == STEPS && read_losses(two_dir, two, &ranks) == STEPS && read_losses(z_dir, z, NULL) == STEPS,
          "%s: every run logs %d steps", name, STEPS);
    for (s = 1; s <= STEPS; s++) { same &= one[s] == two[s]; samez &= z[s] == two[s]; }
    CHECK(ranks == 2, "%s: the 2-rank run logs its ranks (%d)", name, ranks);
    CHECK(same, "%s: 2 ranks log the one-process losses at every step (as written, 6 decimals)", name);
    CHECK(samez, "%s: ZeRO-1 logs the same losses", name);
    snprintf(args, sizeof args, "%s/adapter.gguf %s/adapter.gguf", one_dir, two_dir);
    CHECK(sh("cmp -s %s", args) == 0, "%s: 2 ranks write the one-process adapter, byte for byte", name);
    snprintf(args, sizeof args, "%s/adapter.gguf %s/adapter.gguf", two_dir, z_dir);
    CHECK(sh("cmp -s %s", args) == 0, "%s: so does ZeRO-1", name);
    printf("    %-4s loss %.6f -> %.6f over %d steps: equal in every step for 1 process x 2 micro-batches, 2 ranks, 2 ranks + ZeRO-1; adapters identical\n",
           name, one[1], one[STEPS], STEPS);
}
TEST(sft_on_two_ranks_logs_the_losses_of_one_process) { two_ranks_log_the_losses_of_one_process(0); }
TEST(dpo_on_two_ranks_logs_the_losses_of_one_process) { two_ranks_log_the_losses_of_one_process(1); }
TEST(grpo_on_two_ranks_logs_the_losses_of_one_process) { two_ranks_log_the_losses_of_one_process(2); }

/* a rank per GPU: `mpirun -np 2 build/ft-mpi-cuda-emu train --device cuda` (the kernels emulated on
   the CPU, each rank its own device) beside `build/ft-cuda-emu train --device cuda` in one process
   with the same global batch: the gradients of each rank's micro-batch come down from its
   device, are summed over MPI and go back up. SFT with LoRA dropout (the mask drawn on the
   device), 3 steps: the same losses at every step and the same adapter, byte for byte. ZeRO-1
   shards on a device are refused by name (not built yet) */
TEST(sft_on_two_ranks_with_a_device_each) {
    const char *emu = getenv("FT_CUDA_EMU_BIN"), *mpi_emu = getenv("FT_MPI_CUDA_EMU_BIN");
    char args[2048];
    double one[MAXS], two[MAXS];
    int s, same = 1, ranks = 0;
    if (!emu || !mpi_emu || access(emu, X_OK) != 0 || access(mpi_emu, X_OK) != 0) {
        printf("    skipped: no build/ft-cuda-emu or build/ft-mpi-cuda-emu (make test builds them)\n");
        return;
    }
    train_args(args, sizeof args, 0, "build/mpi_dev_one", 3, 2, "--device cuda");
    CHECK(sh("%s %s > build/mpi_dev_one.log 2>&1", emu, args) == 0, "one process on the device trains (build/mpi_dev_one.log)");
    train_args(args, sizeof args, 0, "build/mpi_dev_two", 3, 1, "--device cuda");
    CHECK(sh("%s %s %s > build/mpi_dev_two.log 2>&1", MPIRUN, mpi_emu, args) == 0, "2 ranks on devices train (build/mpi_dev_two.log)");
    CHECK(read_losses("build/mpi_dev_one", one, NULL) == 3 && read_losses("build/mpi_dev_two", two, &ranks) == 3, "both log 3 steps");
    for (s = 1; s <= 3; s++) same &= one[s] == two[s];
    CHECK(same && ranks == 2, "2 ranks (%d logged) log the one-process losses: %.6f %.6f %.6f vs %.6f %.6f %.6f", ranks, one[1], one[2], one[3],
          two[1], two[2], two[3]);
    CHECK(sh("cmp -s build/mpi_dev_one/adapter.gguf build/mpi_dev_two/adapter.gguf") == 0, "the same adapter, byte for byte");
    printf("    on devices: loss %.6f -> %.6f over 3 steps, equal in every step for 1 process x 2 micro-batches and 2 ranks; adapters identical\n",
           one[1], one[3]);
    train_args(args, sizeof args, 0, "build/mpi_dev_zero", 3, 1, "--device cuda --zero1");
    CHECK(sh("%s %s %s > build/mpi_dev_zero.log 2>&1", MPIRUN, mpi_emu, args) != 0 && sh("grep -q 'ZeRO-1 shards are not built yet' build/mpi_dev_zero.log") == 0,
          "--zero1 with a device is refused by name (build/mpi_dev_zero.log)");
}

/* the pid of rank `rank` of the job writing to `out` (its environment and command line), or 0 */
static pid_t find_rank(int rank, const char *out) {
    DIR *d = opendir("/proc"); struct dirent *e; pid_t found = 0; char want[64];
    snprintf(want, sizeof want, "OMPI_COMM_WORLD_RANK=%d", rank);
    while (d && !found && (e = readdir(d))) {
        char path[300], buf[65536]; FILE *f; size_t n, i; int env = 0, cmd = 0;
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
        if ((f = fopen(path, "rb"))) {
            n = fread(buf, 1, sizeof buf - 1, f); fclose(f);
            for (i = 0; i < n; i++) if (!buf[i]) buf[i] = ' ';
            buf[n] = 0;
            cmd = strstr(buf, "ft-mpi") && strstr(buf, out);
        }
        snprintf(path, sizeof path, "/proc/%s/environ", e->d_name);
        if (cmd && (f = fopen(path, "rb"))) {
            n = fread(buf, 1, sizeof buf - 1, f); fclose(f);
            for (i = 0; i + strlen(want) <= n && !env; i += strlen(buf + i) + 1) env = strcmp(buf + i, want) == 0;
        }
        if (cmd && env) found = (pid_t)atoi(e->d_name);
    }
    if (d) closedir(d);
    return found;
}
static double now_s(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec; }

TEST(a_killed_rank_ends_the_job_and_the_run_resumes) {
    char args[2048], log[8192] = ""; double one[MAXS], part[MAXS], res[MAXS], t0, t_kill = 0, waited; int s, status = 0, worst_step = 0;
    pid_t job, victim = 0; FILE *f; double worst = 0; size_t n;
    train_args(args, sizeof args, 0, "build/mpi_long1", LONG_STEPS, 2, "");
    CHECK(sh("%s %s > build/mpi_long1.log 2>&1", ft_bin, args) == 0, "one process trains %d steps", LONG_STEPS);
    read_losses("build/mpi_long1", one, NULL);
    sh("rm -rf build/mpi_kill");
    train_args(args, sizeof args, 0, "build/mpi_kill", LONG_STEPS, 1, "");
    fflush(stdout);
    if ((job = fork()) == 0) {
        char cmd[4096];
        snprintf(cmd, sizeof cmd, "%s %s %s > build/mpi_kill.log 2>&1", MPIRUN, mpi_bin, args);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    for (t0 = now_s(); now_s() - t0 < 120 && waitpid(job, &status, WNOHANG) == 0;) {   /* past the checkpoint at step 10 */
        struct timespec ms = {0, 20000000};
        if (!victim && read_losses("build/mpi_kill", part, NULL) >= 12 && (victim = find_rank(1, "build/mpi_kill")) > 0) {
            kill(victim, SIGKILL);
            t_kill = now_s();
        }
        nanosleep(&ms, NULL);
    }
    waited = t_kill > 0 ? now_s() - t_kill : -1;
    if (waitpid(job, &status, WNOHANG) == 0) { kill(job, SIGKILL); waitpid(job, &status, 0); }
    CHECK(victim > 0, "rank 1 was found and killed after step 12");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) != 0, "the job exits non-zero");
    CHECK(waited >= 0 && waited < 30, "every rank ended %.1f s after the kill", waited);
    if ((f = fopen("build/mpi_kill.log", "r"))) { n = fread(log, 1, sizeof log - 1, f); log[n] = 0; fclose(f); }
    CHECK(strstr(log, "signal 9") != NULL, "mpirun says which rank died and how:\n%s", log);
    {
        int k = read_losses("build/mpi_kill", part, NULL);
        printf("    rank 1 (pid %d) killed at step %d: the job ended %.2f s later, exit status %d; mpirun: \"%s\"\n", (int)victim, k, waited,
               WIFEXITED(status) ? WEXITSTATUS(status) : -1, strstr(log, "noticed") ? "...noticed that process rank 1 ... exited on signal 9 (Killed)" : "?");
    }
    train_args(args, sizeof args, 0, "build/mpi_kill", LONG_STEPS, 1, "--resume");
    CHECK(sh("%s %s %s > build/mpi_resume.log 2>&1", MPIRUN, mpi_bin, args) == 0, "--resume on 2 ranks finishes the run (build/mpi_resume.log)");
    CHECK(read_losses("build/mpi_kill", res, NULL) == LONG_STEPS, "metrics.jsonl holds each of the %d steps once", LONG_STEPS);
    for (s = 1; s <= LONG_STEPS; s++) {
        double d = fabs(res[s] - one[s]);
        if (!(d <= worst)) { worst = d; worst_step = s; }
    }
    CHECK(worst == 0, "the resumed run logs the uninterrupted one-process losses (largest difference %g at step %d)", worst, worst_step);
    printf("    resumed on 2 ranks from the last checkpoint: all %d losses as the uninterrupted one-process run's (%.6f -> %.6f)\n",
           LONG_STEPS, one[1], one[LONG_STEPS]);
}

TEST(other_commands_run_on_one_rank_only) {
    CHECK(sh("%s %s info %s > build/mpi_info.log 2>&1", MPIRUN, mpi_bin, MODEL) == 2, "ft-mpi info on 2 ranks exits 2");
    CHECK(sh("grep -q 'only `train` runs on several ranks' build/mpi_info.log") == 0, "with a message");
}

int main(void) {
    const char *src = getenv("FT_MODEL");
    ft_bin = getenv("FT_BIN");
    mpi_bin = getenv("FT_MPI_BIN");
    if (!mpi_bin || access(mpi_bin, X_OK) != 0 || sh("command -v mpirun > /dev/null") != 0) {
        printf("# skipped: no build/ft-mpi or mpirun (make mpi; Debian: openmpi-bin libopenmpi-dev)\n");
        return ft_test_summary("test_mpi");
    }
    if (!ft_bin || !src || !tiny_model_write_vocab(MODEL, FT_TYPE_F32, 5, src)) { printf("FAIL - needs FT_BIN and FT_MODEL: %s\n", ft_last_error()); return 1; }
    RUN(sft_on_two_ranks_logs_the_losses_of_one_process);
    RUN(dpo_on_two_ranks_logs_the_losses_of_one_process);
    RUN(grpo_on_two_ranks_logs_the_losses_of_one_process);
    RUN(sft_on_two_ranks_with_a_device_each);
    RUN(a_killed_rank_ends_the_job_and_the_run_resumes);
    RUN(other_commands_run_on_one_rank_only);
    remove(MODEL);
    return ft_test_summary("test_mpi");
}

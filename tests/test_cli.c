/* test_cli.c - the command line (build/ft, or $FT_BIN) on a tiny model that has SmolLM2's
   tokenizer: every command that writes a file or a directory creates the missing parents of its
   output (as mkdir -p), and where it cannot, it fails with a message that names the path and the
   reason: a file where a directory should be, a read-only place, a full disk (the last two on
   tmpfs mounts where this process may mount them: root, as in CI). */
#define _POSIX_C_SOURCE 200809L        /* WEXITSTATUS */
#include "../finetune.h"
#include "ft_test.h"
#include "tiny_model.h"
#include <sys/wait.h>

static const char *FT = "build/ft";
static const char *TINY = "build/cli_tiny.gguf", *DATA = "build/cli_data.jsonl", *LOG = "build/cli_log.txt";
static char LOGTEXT[65536];

/* runs `ft ARGS`, its stdout and stderr into LOGTEXT; returns the exit status. A run that is
   meant to fail leaves the process without freeing what it holds (it exits): under the
   sanitizers (make sanitize) such runs do not check for leaks. */
static int ft_run_as(const char *args, int may_fail) {
    char cmd[4096]; int st; size_t n = 0; FILE *f;
    snprintf(cmd, sizeof cmd, "%s%s %s >%s 2>&1", may_fail ? "ASAN_OPTIONS=detect_leaks=0 " : "", FT, args, LOG);
    st = system(cmd);
    LOGTEXT[0] = 0;
    if ((f = fopen(LOG, "rb"))) { n = fread(LOGTEXT, 1, sizeof LOGTEXT - 1, f); fclose(f); }
    LOGTEXT[n] = 0;
    return st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}
static int exists(const char *path) { FILE *f = fopen(path, "rb"); if (f) fclose(f); return f != NULL; }
static int said(const char *what) { return strstr(LOGTEXT, what) != NULL; }

/* each command with its output at OUT ("%s" in the arguments): a directory (train, sweep, export
   --format peft) or a file; what must exist after it ran, relative to OUT ("" for OUT itself) */
typedef struct cmd { const char *name, *args; int dir; const char *made; } cmd;
static const cmd CMDS[] = {
    {"train", "train -m build/cli_tiny.gguf --data build/cli_data.jsonl --steps 1 --batch 2 --eval-before 0 --threads 1 --out %s",
     1, "/checkpoints/last.gguf"},
    {"sweep", "sweep -m build/cli_tiny.gguf --data build/cli_data.jsonl --eval build/cli_data.jsonl --steps 1 --batch 2 "
     "--eval-gen 0 --threads 1 --grid lr=1e-3 --out %s", 1, "/results.jsonl"},
    {"synth", "synth --method self-instruct -m build/cli_tiny.gguf --seed-tasks examples/data/seed_tasks.jsonl -n 1 "
     "--batch 1 --max-new 4 --max-new-inst 4 --threads 1 -o %s", 0, ""},
    {"merge", "merge -m build/cli_tiny.gguf --adapter build/cli_ok/train/adapter.gguf --type f32 -o %s", 0, ""},
    {"merge-models", "merge-models --base build/cli_tiny.gguf --method linear --input build/cli_tiny.gguf:1 -o %s", 0, ""},
    {"export_peft", "export --format peft -m build/cli_tiny.gguf --adapter build/cli_ok/train/adapter.gguf -o %s",
     1, "/adapter_config.json"},
    {"export_gguf", "export --format gguf -m build/cli_tiny.gguf --adapter build/cli_ok/train/peft -o %s", 0, ""},
    {"logits", "logits -m build/cli_tiny.gguf --ids 1,2,3 -o %s", 0, ""},
    {"quantize", "quantize --type nf4 -m build/cli_tiny.gguf -o %s", 0, ""},
};
#define NCMDS ((int)(sizeof CMDS / sizeof CMDS[0]))

static int run_at(const cmd *c, const char *out, int may_fail) {
    char args[2048];
    snprintf(args, sizeof args, c->args, out);
    return ft_run_as(args, may_fail);
}

/* train first: merge and export read its adapter */
TEST(outputs_in_new_directories) {
    int i;
    for (i = 0; i < NCMDS; i++) {
        char out[256], made[512]; int rc;
        snprintf(out, sizeof out, "build/cli_ok/%s%s", CMDS[i].name, CMDS[i].dir ? "" : "/deeper/out.file");
        rc = run_at(&CMDS[i], out, 0);
        snprintf(made, sizeof made, "%s%s", out, CMDS[i].made);
        CHECK(rc == 0 && exists(made), "ft %s -> %s: exit %d, %s %s\n%s", CMDS[i].name, out, rc, made,
              exists(made) ? "exists" : "missing", LOGTEXT);
    }
}

TEST(a_file_in_the_way_is_named) {
    FILE *f = fopen("build/cli_file", "w");
    int i;
    if (f) fclose(f);
    for (i = 0; i < NCMDS; i++) {
        int rc = run_at(&CMDS[i], "build/cli_file/sub/out", 1);
        CHECK(rc != 0 && said("build/cli_file") && said("not a directory"), "ft %s under a file: exit %d: %s", CMDS[i].name, rc, LOGTEXT);
    }
    i = ft_run_as("train -m build/cli_tiny.gguf --data build/cli_data.jsonl --steps 1 --out build/cli_file", 1);
    CHECK(i != 0 && said("build/cli_file") && said("not a directory"), "train --out onto a file: exit %d: %s", i, LOGTEXT);
}

/* a read-only tmpfs and a full one, where mount(8) works (root, as in CI); otherwise skipped, said */
TEST(read_only_and_full_disk) {
    int i, ro, full;
    if (system("mkdir -p build/cli_ro build/cli_full") != 0) return;
    ro = system("mount -t tmpfs -o ro,size=1m tmpfs build/cli_ro 2>/dev/null") == 0;
    full = system("mount -t tmpfs -o size=48k tmpfs build/cli_full 2>/dev/null") == 0;
    if (!ro || !full) printf("    skipped: cannot mount tmpfs here (needs root): the read-only and full-disk cases\n");
    for (i = 0; ro && i < NCMDS; i++) {
        int rc = run_at(&CMDS[i], "build/cli_ro/sub/out", 1);
        CHECK(rc != 0 && said("build/cli_ro/sub") && said("Read-only file system"), "ft %s on a read-only disk: exit %d: %s",
              CMDS[i].name, rc, LOGTEXT);
    }
    for (i = 0; full && i < NCMDS; i++) {       /* every output but synth's (one short line) outgrows 48 KiB */
        int rc;
        if (strcmp(CMDS[i].name, "synth") == 0) continue;
        rc = run_at(&CMDS[i], "build/cli_full/out", 1);
        CHECK(rc != 0 && said("build/cli_full/out") && said("No space left"), "ft %s on a full disk: exit %d: %s", CMDS[i].name, rc, LOGTEXT);
        if (system("rm -rf build/cli_full/*") != 0) break;
    }
    if (ro && system("umount build/cli_ro") != 0) printf("    (umount build/cli_ro failed)\n");
    if (full && system("umount build/cli_full") != 0) printf("    (umount build/cli_full failed)\n");
}

FT_TEST_MAIN(test_cli) {
    const char *vocab = getenv("FT_MODEL");
    FILE *f; int i;
    if (getenv("FT_BIN")) FT = getenv("FT_BIN");
    if (!vocab || !exists(vocab) || !exists(FT)) {
        printf("    skipped: needs FT_MODEL (tools/fetch-model, for its tokenizer) and %s\n", FT);
        return ft_test_summary("test_cli");
    }
    if (!tiny_model_write_vocab(TINY, FT_TYPE_F32, 5, vocab)) { printf("FAIL - cannot write %s\n", TINY); return 1; }
    if (!(f = fopen(DATA, "w"))) { printf("FAIL - cannot write %s\n", DATA); return 1; }
    for (i = 0; i < 6; i++) fprintf(f, "{\"instruction\": \"Say %d.\", \"input\": \"\", \"output\": \"%d\"}\n", i, i);
    fclose(f);
    RUN(outputs_in_new_directories);
    RUN(a_file_in_the_way_is_named);
    RUN(read_only_and_full_disk);
    return ft_test_summary("test_cli");
}

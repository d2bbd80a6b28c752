/* test_cli.c - the command line (build/ft, or $FT_BIN) on a tiny model that has SmolLM2's
   tokenizer: every command that writes a file or a directory creates the missing parents of its
   output (as mkdir -p), and where it cannot, it fails with a message that names the path and the
   reason: a file where a directory should be, a read-only place, a full disk (the last two on
   tmpfs mounts where this process may mount them: root, as in CI). And the option table: bad
   values refused with exit 2, usage texts, --config files and the run's config read back, the
   library's defaults per objective, --resume's metrics, paths checked before loading, --seq-len
   cuts, GRPO through ft_train, the library's adapter-format policy. */
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
   --format peft) or a file; what must exist after it ran, relative to OUT ("" for OUT itself).
   train's --rank 16 makes its adapter (which merge and export read) outgrow the full disk's 48 KiB */
typedef struct cmd { const char *name, *args; int dir; const char *made; } cmd;
static const cmd CMDS[] = {
    {"train", "train -m build/cli_tiny.gguf --data build/cli_data.jsonl --steps 1 --batch 2 --rank 16 --eval-before 0 "
     "--threads 1 --out %s",
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


/* how often `what` occurs in text */
static int count(const char *text, const char *what) {
    int n = 0;
    const char *p = text;
    while ((p = strstr(p, what)) != NULL) {
        n++;
        p += strlen(what);
    }
    return n;
}

static char *slurp(const char *path) {
    static char buf[65536];
    size_t n = 0;
    FILE *f = fopen(path, "rb");
    buf[0] = 0;
    if (f) n = fread(buf, 1, sizeof buf - 1, f);
    if (f) fclose(f);
    buf[n] = 0;
    return buf;
}

#define TRAIN "train -m build/cli_tiny.gguf --data build/cli_data.jsonl --threads 1 --eval-before 0 "
#define SWEEP "-m build/cli_tiny.gguf --data build/cli_data.jsonl --eval build/cli_data.jsonl "

/* a value that does not parse completely, is not finite or is out of range is refused before
   anything runs: exit 2 and a message naming the option, the value and what it must be (--log-every
   0 died of SIGFPE; --lr nan trained an all-NaN adapter; the others fell back to defaults) */
TEST(bad_values_are_refused) {
    static const char *cases[][2] = {
        {"--log-every 0", "--log-every 0: must be an integer in [1, 1e9]"},
        {"--lr nan", "--lr nan: must be a finite number in (0, 10]"},
        {"--lr inf", "--lr inf: must be a finite number in (0, 10]"},
        {"--lr -1", "--lr -1: must be a finite number in (0, 10]"},
        {"--lr 1e-4x", "--lr 1e-4x: must be a finite number"},
        {"--rank 0", "--rank 0: must be an integer in [1, 4096]"},
        {"--rank abc", "--rank abc: must be an integer in [1, 4096]"},
        {"--rank 8.5", "--rank 8.5: must be an integer"},
        {"--batch 0", "--batch 0: must be an integer in [1, 65536]"},
        {"--steps -5", "--steps -5: must be an integer in [0, 1e9]"},
        {"--epochs 0", "--epochs 0: must be an integer in [1, 1e6]"},
        {"--dropout 1", "--dropout 1: must be a finite number in [0, 1)"},
        {"--schedule cosin", "--schedule cosin: must be one of cosine, linear, constant"},
        {"--objective dpoo", "--objective dpoo: must be one of sft, cpt, dpo,"},
        {"--method loraa", "--method loraa: must be one of lora, adapter, prefix, prompt, ia3, full, loha, qlora, dora"},
        {"--quantize q4_0", "--quantize q4_0: must be one of nf4, none"},
        {"--targets q_proj,nope", "--targets q_proj,nope: must be all, attn, mlp"},
        {"--pack=2", "--pack 2: must be 0 or 1"},
        {"--mix other.jsonl", "--mix other.jsonl: must be FILE:RATIO"},
        {"--reward numbr", "--reward numbr: must be"},
        {"--frobnicate 1", "unknown option --frobnicate"},
        {"--lr", "--lr needs a value"},
    };
    int i;
    for (i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++) {
        char args[512];
        int rc;
        snprintf(args, sizeof args, TRAIN "--steps 1 --out build/cli_bad %s", cases[i][0]);
        rc = ft_run_as(args, 1);
        CHECK(rc == 2 && said(cases[i][1]) && said("ft train: "), "ft train %s: exit %d: %s", cases[i][0], rc, LOGTEXT);
    }
    CHECK(!exists("build/cli_bad/config"), "a refused run wrote build/cli_bad/config");
    i = ft_run_as("generate -m build/cli_tiny.gguf -p hi -n 0", 1);
    CHECK(i == 2 && said("ft generate: --n 0: must be an integer in [1, 1e6]"), "generate -n 0: exit %d: %s", i, LOGTEXT);
    i = ft_run_as("merge-models --base build/cli_tiny.gguf --input build/cli_tiny.gguf:1:2 -o build/cli_bad.gguf", 1);
    CHECK(i == 2 && said("--input build/cli_tiny.gguf:1:2: must be PATH[:WEIGHT[:DENSITY]]"), "merge-models: exit %d: %s", i,
          LOGTEXT);
    i = ft_run_as("sweep " SWEEP "--grid lr=1e-3,abc --out build/cli_bad", 1);
    CHECK(i == 2 && said("--lr abc: must be a finite number in (0, 10]"), "sweep --grid lr=1e-3,abc: exit %d: %s", i, LOGTEXT);
    i = ft_run_as("sweep " SWEEP "--grid nope=1 --out build/cli_bad", 1);
    CHECK(i == 2 && said("--grid nope=1: must be KEY=V1,V2,... with KEY an option of ft train"), "sweep --grid nope=1: %d: %s", i,
          LOGTEXT);
}

/* ft alone lists the commands; ft CMD --help lists its options from the table, with the defaults
   of the objective given (the library's: simpo's beta 2, gamma 0.5) */
TEST(usage_from_the_table) {
    int rc = ft_run_as("", 1);
    CHECK(rc == 2 && said("usage: ft COMMAND") && said("  sweep ") && said("  merge-models "), "ft: exit %d: %s", rc, LOGTEXT);
    rc = ft_run_as("train --help", 0);
    CHECK(rc == 0 && said("--rank R") && said("[1, 4096]; default 8") && said("--schedule NAME") &&
          said("cosine, linear, constant") && said("  simpo ") && said("--lr X"), "train --help: exit %d: %s", rc, LOGTEXT);
    rc = ft_run_as("train --objective simpo --help", 0);
    CHECK(rc == 0 && said("default 2\n") && said("target margin; [0, 100]; default 0.5"), "train --objective simpo --help: %s",
          LOGTEXT);
    rc = ft_run_as("merge-models --help", 0);
    CHECK(rc == 0 && said("--input A.gguf[:W[:D]]") && said("dare_linear") && said("f32, f16, q4_0, q4_1, q8_0, bf16;"),
          "merge-models --help: %s", LOGTEXT);
    rc = ft_run_as("sweep --help", 0);
    CHECK(rc == 0 && said("--grid KEY=V1,V2") && said("every ft train option"), "sweep --help: %s", LOGTEXT);
}

/* --config FILE: key = value lines; errors name FILE:LINE and the key; options after it override it;
   the run's config holds every option as it ran and reads back into the same config */
TEST(config_files) {
    FILE *f = fopen("build/cli_cfg", "w");
    char first[8192];
    int rc;
    if (f) fprintf(f, "# a comment\n\nrank = 4\nsteps = 1\nbatch = 2\nlr = 0.001\n");
    if (f) fclose(f);
    rc = ft_run_as(TRAIN "--config build/cli_cfg --rank 2 --out build/cli_cfg_run", 0);
    snprintf(first, sizeof first, "%s", slurp("build/cli_cfg_run/config"));
    CHECK(rc == 0 && strstr(first, "\nrank = 2\n") && strstr(first, "\nlr = 0.001\n") && strstr(first, "\nsteps = 1\n") &&
          strstr(first, "\nalpha = 8\n") && strstr(first, "\nobjective = sft\n") && strstr(first, "\nschedule = cosine\n"),
          "train --config: exit %d: %s\nconfig:\n%s", rc, LOGTEXT, first);
    rc = ft_run_as("train --config build/cli_cfg_run/config --out build/cli_cfg_run2", 0);
    CHECK(rc == 0, "train --config RUN/config: exit %d: %s", rc, LOGTEXT);
    {
        char *a = strstr(first, "\nout = "), *b = strstr(slurp("build/cli_cfg_run2/config"), "\nout = ");
        CHECK(a && b && !strcmp(strchr(a + 1, '\n'), strchr(b + 1, '\n')), "the run's config did not read back the same:\n%s",
              slurp("build/cli_cfg_run2/config"));
    }
    f = fopen("build/cli_cfg_bad", "w");
    if (f) fprintf(f, "steps = 1\n\nrank = zero\n");
    if (f) fclose(f);
    rc = ft_run_as(TRAIN "--config build/cli_cfg_bad --out build/cli_bad", 1);
    CHECK(rc == 2 && said("build/cli_cfg_bad:3: rank = zero: must be an integer in [1, 4096]"), "bad config value: exit %d: %s",
          rc, LOGTEXT);
    f = fopen("build/cli_cfg_bad", "w");
    if (f) fprintf(f, "steps = 1\nrnak = 4\n");
    if (f) fclose(f);
    rc = ft_run_as(TRAIN "--config build/cli_cfg_bad --out build/cli_bad", 1);
    CHECK(rc == 2 && said("build/cli_cfg_bad:2: unknown key 'rnak'"), "unknown config key: exit %d: %s", rc, LOGTEXT);
}

/* the library's defaults follow the objective: simpo records beta 2, gamma 0.5 and its rate */
TEST(objective_defaults) {
    int rc = ft_run_as("train -m build/cli_tiny.gguf --data build/cli_pref.jsonl --objective simpo --steps 1 --batch 2 "
                       "--threads 1 --eval-before 0 --out build/cli_simpo", 0);
    const char *cfg = slurp("build/cli_simpo/config");
    CHECK(rc == 0 && strstr(cfg, "\nbeta = 2\n") && strstr(cfg, "\ngamma = 0.5\n") && strstr(cfg, "\nlr = 5e-05\n"),
          "simpo: exit %d: %s\n%s", rc, LOGTEXT, cfg);
}

/* a reference pass between the forward and its backward (DPO switches the method off and on):
   full fine-tuning's weights are not taken for written in place; the first loss is ln 2 (the
   policy equals its reference), the second lower */
TEST(full_fine_tuning_with_a_reference) {
    int rc = ft_run_as("train -m build/cli_tiny.gguf --data build/cli_pref.jsonl --objective dpo --method full --steps 2 "
                       "--batch 2 --lr 1e-3 --threads 1 --eval-before 0 --save-every 0 --out build/cli_dpo_full", 0);
    const char *m = slurp("build/cli_dpo_full/metrics.jsonl");
    const char *l1 = strstr(m, "\"loss\": "), *l2 = l1 ? strstr(l1 + 1, "\"loss\": ") : NULL;
    double a = l1 ? atof(l1 + 8) : -1, b = l2 ? atof(l2 + 8) : -1;
    CHECK(rc == 0 && fabs(a - log(2.0)) < 1e-5 && b >= 0 && b < a, "dpo, full: exit %d, losses %g, %g: %s", rc, a, b, LOGTEXT);
}

/* after --resume, metrics.jsonl keeps the lines up to the checkpoint's step once */
TEST(resume_keeps_metrics_once) {
    FILE *f;
    const char *m;
    int rc = ft_run_as(TRAIN "--steps 2 --batch 2 --out build/cli_resume", 0);
    CHECK(rc == 0, "train --steps 2: exit %d: %s", rc, LOGTEXT);
    f = fopen("build/cli_resume/metrics.jsonl", "a");       /* a step logged after the checkpoint, then a crash */
    if (f) fprintf(f, "{\"step\": 3, \"epoch\": 0, \"loss\": 99.0}\n");
    if (f) fclose(f);
    rc = ft_run_as(TRAIN "--steps 4 --batch 2 --resume --out build/cli_resume", 0);
    m = slurp("build/cli_resume/metrics.jsonl");
    CHECK(rc == 0 && said("resuming from") && count(m, "\"step\": ") == 4 && count(m, "\"step\": 3,") == 1 && !strstr(m, "99.0"),
          "resume: exit %d: %s\nmetrics:\n%s", rc, LOGTEXT, m);
}

/* paths are checked before the model loads; --seq-len cuts are counted; nothing to learn is refused */
TEST(paths_and_truncation) {
    int rc = ft_run_as("train -m build --data build/cli_data.jsonl --steps 1 --out build/cli_dir_model", 1);
    CHECK(rc == 1 && said("build: a directory without config.json"), "a directory as the model: exit %d: %s", rc, LOGTEXT);
    rc = ft_run_as("train -m build/no_such.gguf --data build/cli_data.jsonl --steps 1 --out build/cli_file/run", 1);
    CHECK(rc == 1 && said("build/cli_file") && said("not a directory"), "--out under a file: exit %d: %s", rc, LOGTEXT);
    rc = ft_run_as("train -m build/no_such.gguf --data build/cli_data.jsonl --steps 1 --out build/cli_nomodel", 1);
    CHECK(rc == 1 && said("build/no_such.gguf: No such file"), "a missing model: exit %d: %s", rc, LOGTEXT);
    rc = ft_run_as(TRAIN "--steps 1 --seq-len 8 --out build/cli_short", 1);
    CHECK(rc == 1 && said("6 of 6 examples cut to --seq-len 8") && said("no training example keeps a target token"),
          "--seq-len 8: exit %d: %s", rc, LOGTEXT);
}

/* ft eval --mc, and multiple-choice items as --eval-general (acc and acc_norm before and after) */
TEST(multiple_choice) {
    FILE *f = fopen("build/cli_mc.jsonl", "wb"); int rc; size_t n; char *j;
    if (f) { fputs("{\"context\": \"The sky is\", \"choices\": [\"blue\", \"loud\"], \"gold\": 0}\n"
                   "{\"goal\": \"Open a jar\", \"sol1\": \"twist the lid\", \"sol2\": \"sing to it\", \"label\": 0}\n", f); fclose(f); }
    rc = ft_run_as("eval -m build/cli_tiny.gguf --mc build/cli_mc.jsonl --threads 1", 0);
    CHECK(rc == 0 && said("build/cli_mc.jsonl: 2 items, acc ") && said("acc_norm"), "eval --mc: exit %d: %s", rc, LOGTEXT);
    rc = ft_run_as("eval -m build/cli_tiny.gguf --mc build/cli_data.jsonl --threads 1", 1);
    CHECK(rc == 1 && said("build/cli_data.jsonl:1") && said("not a multiple-choice item"), "eval --mc on other data: exit %d: %s", rc, LOGTEXT);
    rc = ft_run_as(TRAIN "--steps 1 --eval build/cli_data.jsonl --eval-gen 0 --eval-general build/cli_mc.jsonl --eval-before 1 --out build/cli_mc_run", 0);
    CHECK(rc == 0 && said("general acc (multiple choice)") && said("general acc_norm"), "train --eval-general MC: exit %d: %s", rc, LOGTEXT);
    j = (char *)ft_test_slurp("build/cli_mc_run/eval.json", &n);
    CHECK(j && strstr(j, "\"general_acc\"") && strstr(j, "\"before_general_acc_norm\""), "eval.json: %s", j ? j : "(missing)");
    free(j);
}

/* one ft_train for GRPO too: checkpoints, the reward curve; an adapter PEFT cannot hold gets no peft/
   and ft export --format peft says why */
TEST(rl_and_formats) {
    int rc = ft_run_as("train -m build/cli_tiny.gguf --data build/cli_prompts.jsonl --objective grpo --reward number --steps 1 "
                       "--prompts 2 --group 2 --max-new 4 --grad-accum 2 --threads 1 --out build/cli_grpo", 0);
    CHECK(rc == 0 && exists("build/cli_grpo/checkpoints/last.gguf") && exists("build/cli_grpo/reward.svg") &&
          strstr(slurp("build/cli_grpo/metrics.jsonl"), "\"reward\": "), "grpo: exit %d: %s", rc, LOGTEXT);
    rc = ft_run_as(TRAIN "--method adapter --bottleneck 4 --steps 1 --batch 2 --out build/cli_adapter", 0);
    CHECK(rc == 0 && exists("build/cli_adapter/adapter.gguf") && !exists("build/cli_adapter/peft/adapter_config.json"),
          "--method adapter: exit %d: %s", rc, LOGTEXT);
    rc = ft_run_as("export --format peft -m build/cli_tiny.gguf --adapter build/cli_adapter/adapter.gguf -o build/cli_peft", 1);
    CHECK(rc == 1 && said("ft export: ") && !exists("build/cli_peft/adapter_config.json"), "export to PEFT: exit %d: %s", rc,
          LOGTEXT);
    rc = ft_run_as("export --format gguf -m build/cli_tiny.gguf --adapter build/cli_adapter/adapter.gguf -o build/cli.gguf", 0);
    CHECK(rc == 0 && said("finetune.h adapter GGUF"), "export --format gguf of adapters: exit %d: %s", rc, LOGTEXT);
    rc = ft_run_as("merge --base build/cli_tiny.gguf --method task --input build/cli_tiny.gguf:0.5 -o build/cli_task.gguf", 0);
    CHECK(rc == 0 && said("task of 1 input"), "merge --method task: exit %d: %s", rc, LOGTEXT);
}

/* the losses of a run's metrics.jsonl, at most n; returns how many */
static int metrics_losses(const char *path, double *loss, int n) {
    char line[1024];
    int k = 0;
    FILE *f = fopen(path, "r");
    while (f && k < n && fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "\"loss\": ");
        if (p) loss[k++] = strtod(p + 8, NULL);
    }
    if (f) fclose(f);
    return k;
}
/* LOGTEXT without the lines that start with "ft: " (notes, timings) into dst (8192 bytes) */
static void without_notes(char *dst) {
    const char *p = LOGTEXT;
    size_t n = 0;
    while (*p) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p + 1) : strlen(p);
        if (strncmp(p, "ft: ", 4) != 0 && n + len < 8192) {
            memcpy(dst + n, p, len);
            n += len;
        }
        p += len;
    }
    dst[n] = 0;
}
/* --device cuda: build/ft-cuda-emu is the command line with finetune_cuda.cu's kernels run on the
   CPU through tests/cuda_emu.h (device memory unreadable from the host, as on a GPU). It trains
   the same QLoRA steps as the CPU build (the model and adapter moved to the device for the steps
   and back for saving): the losses agree within 1% and the adapter it writes is there. With that
   adapter, `ft generate` and `ft eval --device cuda` (the KV cache on the device) give the CPU's
   greedy text and answers and its loss within 1%. build/ft, built without CUDA, refuses
   --device cuda and names build/ft-cuda. */
TEST(device_cuda_trains_as_the_cpu) {
    const char *emu = getenv("FT_CUDA_EMU_BIN"), *cpu = FT, *la, *lb;
    char cpu_out[2][8192], dev_out[2][8192];
    double a[4], b[4];
    int rc, na, nb, i;
    if (!emu || !exists(emu)) { printf("    skipped: no %s (make test builds it)\n", emu ? emu : "FT_CUDA_EMU_BIN"); return; }
    rc = ft_run_as(TRAIN "--method qlora --steps 2 --batch 2 --out build/cli_on_cpu", 0);
    CHECK(rc == 0, "the CPU run: exit %d: %s", rc, LOGTEXT);
    FT = emu;
    rc = ft_run_as(TRAIN "--method qlora --steps 2 --batch 2 --device cuda --out build/cli_on_gpu", 0);
    FT = cpu;
    CHECK(rc == 0 && said("training on the cuda device"), "the emulated GPU run: exit %d: %s", rc, LOGTEXT);
    na = metrics_losses("build/cli_on_cpu/metrics.jsonl", a, 4);
    nb = metrics_losses("build/cli_on_gpu/metrics.jsonl", b, 4);
    CHECK(na == 2 && nb == 2, "steps logged: %d on the CPU, %d on the device", na, nb);
    for (i = 0; i < na && i < nb; i++)
        CHECK(fabs(a[i] - b[i]) <= 0.01 * fabs(a[i]), "step %d: loss %g on the CPU, %g on the device", i + 1, a[i], b[i]);
    CHECK(exists("build/cli_on_gpu/adapter.gguf"), "the device run's adapter");
    /* generation and evaluation with the adapter, on the device and on the CPU: the same greedy
       text, the same answers, the loss within 1% */
    for (i = 0; i < 2; i++) {
        const char *gen = "generate -m build/cli_tiny.gguf --lora build/cli_on_cpu/adapter.gguf -p 'Say 3.' -n 12 --threads 1";
        const char *ev = "eval -m build/cli_tiny.gguf --lora build/cli_on_cpu/adapter.gguf --data build/cli_data.jsonl --max-new 8 --threads 1";
        char cmd[512];
        FT = emu;
        snprintf(cmd, sizeof cmd, "%s%s", i ? gen : ev, " --device cuda");
        rc = ft_run_as(cmd, 0);
        CHECK(rc == 0 && said("running on the cuda device"), "%s on the emulated GPU: exit %d: %s", i ? "generate" : "eval", rc, LOGTEXT);
        without_notes(dev_out[i]);
        FT = cpu;
        rc = ft_run_as(i ? gen : ev, 0);
        CHECK(rc == 0, "%s on the CPU: exit %d: %s", i ? "generate" : "eval", rc, LOGTEXT);
        without_notes(cpu_out[i]);
    }
    CHECK(strcmp(cpu_out[1], dev_out[1]) == 0 && strlen(cpu_out[1]) > 1, "generated: \"%s\" on the CPU, \"%s\" on the device", cpu_out[1], dev_out[1]);
    la = strstr(cpu_out[0], "loss ");
    lb = strstr(dev_out[0], "loss ");
    CHECK(la && lb && fabs(strtod(la + 5, NULL) - strtod(lb + 5, NULL)) <= 0.01 * strtod(la + 5, NULL), "eval: \n%s\non the CPU, \n%s\non the device", cpu_out[0], dev_out[0]);
    la = strstr(cpu_out[0], "accuracy:");
    lb = strstr(dev_out[0], "accuracy:");
    CHECK(la && lb && strcmp(la, lb) == 0, "eval's answers: \n%s\non the CPU, \n%s\non the device", cpu_out[0], dev_out[0]);
    printf("    generated on both: \"%s\"\n", cpu_out[1]);
    rc = ft_run_as(TRAIN "--steps 1 --device cuda --out build/cli_no_cuda", 1);
    CHECK(rc != 0 && said("build/ft-cuda"), "--device cuda on the CPU build: exit %d: %s", rc, LOGTEXT);
    rc = ft_run_as(TRAIN "--steps 1 --device tpu --out build/cli_no_tpu", 1);
    CHECK(rc == 2 && said("--device tpu: must be cpu or cuda"), "--device tpu: exit %d: %s", rc, LOGTEXT);
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
    if (!(f = fopen("build/cli_pref.jsonl", "w"))) { printf("FAIL - cannot write build/cli_pref.jsonl\n"); return 1; }
    for (i = 0; i < 4; i++) fprintf(f, "{\"prompt\": \"Say %d.\", \"chosen\": \"%d\", \"rejected\": \"It is %d.\"}\n", i, i, i);
    fclose(f);
    if (!(f = fopen("build/cli_prompts.jsonl", "w"))) { printf("FAIL - cannot write build/cli_prompts.jsonl\n"); return 1; }
    for (i = 0; i < 4; i++) fprintf(f, "{\"prompt\": \"What is %d + 1?\", \"answer\": \"%d\"}\n", i, i + 1);
    fclose(f);
    RUN(outputs_in_new_directories);
    RUN(a_file_in_the_way_is_named);
    RUN(read_only_and_full_disk);
    RUN(bad_values_are_refused);
    RUN(usage_from_the_table);
    RUN(config_files);
    RUN(objective_defaults);
    RUN(full_fine_tuning_with_a_reference);
    RUN(resume_keeps_metrics_once);
    RUN(paths_and_truncation);
    RUN(multiple_choice);
    RUN(rl_and_formats);
    RUN(device_cuda_trains_as_the_cpu);
    return ft_test_summary("test_cli");
}

/* finetune.h - v0.3.1 - the whole LLM fine-tuning pipeline in one C header - public domain / MIT
   https://github.com/ (vendor it: one file, C99, libc + libm + pthreads)

   Do this:
      #define FINETUNE_IMPLEMENTATION
   before you include this file in *one* C or C++ file to create the implementation.

      // i.e. it should look like this:
      #include ...
      #define FINETUNE_IMPLEMENTATION
      #include "finetune.h"

   COMPILE-TIME OPTIONS (define before the #include that has FINETUNE_IMPLEMENTATION)

      FT_STATIC              every public function is `static` (private copy in one translation unit)
      FT_NO_SIMD             use only the scalar reference kernels (no AVX2/AVX-512/NEON)
      FT_NO_THREADS          no pthreads: every kernel runs on the calling thread
      FT_MALLOC(sz)          \
      FT_REALLOC(p, newsz)    > your allocator; define all three or none
      FT_FREE(p)             /
      FT_ASSERT(x)           assertion for programmer errors only (default: assert from <assert.h>)
      FT_MAX_THREADS         upper bound of the thread pool (default 64)
      FT_NO_RL               leave out GRPO / PPO: rollouts, rewards, the regex engine (the
                             objectives stay in the table and say they are compiled out)
      FT_NO_SYNTH            leave out Self-Instruct / Evol-Instruct (ft_synth_*)
      FT_NO_MERGE            leave out model merging (ft_merge_models, ft_merge_tensor)

   ENVIRONMENT

      FT_THREADS=N           thread count when ft_ctx_opts.n_threads is 0 (default: online CPUs)

   ===========================================================================================
   MANUAL
   ===========================================================================================

   1. Quick start

      #define FINETUNE_IMPLEMENTATION
      #include "finetune.h"

      ft_ctx *ctx;
      if (ft_ctx_init(&ctx, NULL) != FT_OK) { fprintf(stderr, "%s\n", ft_last_error()); return 1; }
      ft_params *P;  ft_params_init(&P);
      ft_tensor *W = ft_params_add(P, "w", 2, (int64_t[2]){4, 3});   // C99 compound literal
      ft_params_alloc(P);                                              // one block for all, and one for grads
      ft_params_init_uniform(P, W, -0.5f, 0.5f, ctx);
      for (int step = 0; step < 100; step++) {
          ft_ctx_reset(ctx);                                  // new step: empty tape, empty arena
          ft_tensor *x = ft_tensor_2d(ctx, 8, 3);             // activations live in the per-step arena
          ...fill x->data...
          ft_tensor *y = ft_matmul(ctx, x, W, 0, 1);          // y = x W^T, shape (8, 4)
          ft_tensor *loss = ft_mean(ctx, ft_mul(ctx, y, y));
          if (ft_backward(ctx, loss) != FT_OK) ...;           // grads land in W->grad
          ...optimizer step on P...; ft_params_zero_grad(P);
      }
      ft_params_free(P); ft_ctx_free(ctx);

   2. Results and errors
      Every call that can fail on bad input returns an ft_result (FT_OK = 0, errors < 0).
      ft_result_string(r) names the code; ft_last_error() is this thread's message for the last
      failure, with the file and offset or line where there is one. Nothing aborts on bad input;
      FT_ASSERT fires only on programmer errors (NULL contexts, impossible internal states).
      Ops (ft_matmul, ft_add, ...) return a tensor, or NULL after a shape error: a NULL input makes
      an op return NULL, so a whole expression can be checked once; ft_ctx_status(ctx) holds the
      first error since the last ft_ctx_reset.

   3. Tensors
      f32 for compute; F16/BF16 storage (ft_fp16_to_fp32, ft_bf16_to_fp32, ...) for frozen weights;
      quantized frozen storage types come with the GGUF loader, and NF4 (FT_TYPE_NF4: the packed
      nibbles in ->data, the rest of its state in ->nf4; ft_tensor_nf4 wraps your own). Up to 4 dims, shape[] outermost
      first, the last dim contiguous (row-major, as PyTorch). Views (ft_reshape, ft_view_rows)
      share storage. Storage is 64-byte aligned. Shape convention in kernel comments:
      B = batch, T = sequence, C = channels, V = vocab, H = heads, D = head dim, N = rows.
      Memory: parameters, their gradients (and later optimizer moments) live in blocks allocated
      once (ft_params); activations in a per-step arena that ft_ctx_reset empties: after the
      first step a training loop does no malloc.

   4. Autograd
      Ops record onto the context's tape when an input requires a gradient and no-grad mode is
      off (ft_ctx_set_grad). ft_backward(ctx, loss) walks the tape in reverse and ACCUMULATES
      gradients (+=) only into tensors that require them: frozen branches are pruned. Writing into
      a tensor that the tape saved (ft_tensor_mark_modified, the ft_*_inplace ops) bumps its
      version; backward then stops with FT_ERR_INPLACE instead of using stale values.
      Op set: matmul (both transposes, batched), add/sub/mul (broadcasting), scale, sum/mean
      (all or last dim), rmsnorm, layernorm, rope (normal = adjacent pairs, neox = halves;
      ft_rope_ext: frequency factors, linear and YaRN scaling), causal grouped-query attention
      with optional prefix key/values, document segments and a sliding window, softmax,
      log_softmax, silu, gelu, gelu_tanh, tanh, relu, sigmoid, logsigmoid, exp, log, swiglu,
      embedding, cross_entropy (ignore index), logprob (per-token log p of a target), clamp,
      minimum, maximum, where, dropout, concat, slice, reshape, moe_combine (each token's expert
      outputs weighted), linear_cross_entropy (the head and the loss chunk by chunk: the logits
      never whole), and lora_linear (x W^T plus a
      LoRA branch s (xd A^T) B^T as one op: it keeps the (r, rows) low-rank activations instead of
      three (rows, out) tensors, and its low-rank products run on skinny kernels).
      A backward that is first to write a gradient buffer stores instead of zeroing and adding
      (add, sub, swiglu, rope, the linear layer's input), and the residual add passes the
      gradient on with one vector pass.
      Gradient checkpointing: ft_ctx_set_checkpointing(ctx, 1) makes the model run each decoder
      layer as a checkpointed segment (ft_checkpoint, usable for any segment whose output has its
      input's shape): the forward keeps only the layer's input and output and gives the layer's
      intermediates back to the arena at once; backward recomputes the layer (the same dropout
      masks: the RNG state is replayed) and walks its sub-tape, one layer at a time. Gradients
      are bit-identical to a run without it; activation memory drops from all layers' to one
      layer's (ft_ctx_arena_peak measures it) for about one more forward pass of compute.

   5. Kernels and threads
      Each kernel has a scalar reference (always compiled: ft__*_ref) and SIMD versions for
      AVX-512, AVX2+FMA and NEON, picked at compile time (-march=native; FT_NO_SIMD forces the
      reference). A pthread pool per context splits work by output rows with static partitions:
      results are deterministic for a given seed and thread count. Idle workers spin briefly
      (tens of microseconds) before sleeping, so the thousands of short jobs of a training step
      are handed over in well under a microsecond each.

   6. GGUF and NF4
      ft_gguf_open maps a GGUF file read-only and checks every count, length, type and offset
      (errors name the file and the byte offset). Tensors keep the file's type: F32, F16, BF16,
      Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, IQ4_NL are decoded bit-exactly as the gguf
      package does, row by row inside the GEMM's packing (forward) and one K block at a time for
      the input gradient: no f32 copy of a model is made. ft_gguf_writer writes GGUF atomically.
      A Hugging Face model directory opens wherever a GGUF does (ft_gguf_open, ft_model_load):
      config.json, model.safetensors or its shards (F32/F16/BF16 mapped in place),
      tokenizer.json, tokenizer_config.json / chat_template.jinja, generation_config.json, read
      as the GGUF llama.cpp's convert_hf_to_gguf.py makes of them (its Q/K permutation, gemma's
      1 + w norms, stacked experts, RoPE factors: in copies), so everything else sees a GGUF.
      Every file the library writes goes through one atomic writer (PATH.tmp, fsync, rename) that
      first makes the missing directories of PATH (ft_mkdirs_parent, as mkdir -p); an error names
      the path and the reason (a file in the way, read-only, no space).
      NF4 is QLoRA's storage, byte for byte as bitsandbytes 0.50 makes it on the CPU with
      quantize_4bit(x, blocksize=64, quant_type="nf4", compress_statistics=True): 4-bit indices
      into 16 NormalFloat values, an absmax per 64 weights, the absmax quantized again to 8 bits
      (one f32 scale per 256 of them, minus their mean): 0.516 bytes per weight.
         ft_quantize_nf4(x, n, packed, qabsmax, absmax2, &offset)   bytes equal to bitsandbytes'
         ft_dequantize_nf4(packed, &state, i0, n, y)                floats equal to dequantize_4bit
         ft_model_opts o = {FT_TYPE_NF4};  ft_model_load(&m, path, &o)   every linear weight of any
                                                 type (q k v o gate up down) -> NF4 at load
         ft_model_save_gguf(m, "out.gguf")       NF4 in plain GGUF (I8 nibbles + .nf4_* tensors),
                                                 read by any GGUF reader, mapped back zero-copy
      The matmul decodes NF4 rows (SIMD: a 16-entry register lookup) where it packs the GEMM, so
      y = x W^T and dx = dy W equal the matmul with the decoded f32 W. Limits of the bit-exact
      claim: bitsandbytes' offset is torch's mean, which torch may split across threads past
      32768 blocks (2M weights); torch builds without FMA (DEFAULT capability) round 42 of the 256
      entries of the 8-bit map one ulp apart (the map travels in the file, so decoding is exact).

   7. Models, tokenizer, generation
      ft_model_load builds llama (Llama 2 / 3.x with RoPE scaling: llama3 frequency factors,
      linear, YaRN; Mixtral's experts), mistral, qwen2, qwen3, gemma3 (sliding-window layers),
      phi3, qwen3moe and olmoe from the metadata - each architecture a row of differences in
      one table - and the tokenizer (byte-level BPE with the pre-tokenizer the file names, or
      SentencePiece with byte fallback), whose ids equal llama.cpp's. ft_chat_apply renders
      ChatML, llama2, llama3, zephyr, gemma and phi3 templates. Mixture-of-experts layers route
      each token to its top-k experts (tokens grouped by expert); ft_model_router_loss gives
      the load-balancing loss (transformers' load_balancing_loss_func) and the router z-loss,
      which ft_train adds (router_aux_coef, router_z_coef).
      ft_model_forward is on the tape (training); ft_model_decode + ft_kv_cache + ft_sample /
      ft_generate do batched generation (greedy, temperature, top-k, top-p, stop ids).

   8. PEFT methods
      ft_lora_attach(&p, model, &opts) adds LoRA (PEFT's init and scale; rsLoRA; DoRA with a
      detached norm) on any subset of q, k, v, o, gate, up, down and any layers; on a quantized
      base it is QLoRA (the paper's NF4 base: ft_model_opts.quantize = FT_TYPE_NF4).
      ft_peft_params(p) are the trainable tensors; ft_peft_set_enabled(p, 0)
      gives the base model (the reference policy) without a second copy; ft_peft_merge folds
      W + sBA into owned f32 weights. Forward, gradients and merge equal PEFT's own
      (tests/test_peft_ref.c).
      Files: ft_peft_save(p, path, format, base_name) writes llama.cpp's LoRA GGUF (llama-cli
      --lora), a PEFT directory (adapter_model.safetensors + adapter_config.json for PeftModel.
      from_pretrained; Q/K rows back in HF order) or finetune.h's own GGUF (every method);
      FT_FORMAT_AUTO picks llama.cpp's where it can hold the adapter. ft_peft_can_save says which
      format holds which adapter, and why not: the policy lives there, once. ft_peft_load(&p,
      model, path) reads any of the three (a directory is PEFT), taking the method, rank, alpha,
      rsLoRA/DoRA, sites and layers from it, so converting is load + save.
      ft_model_save_merged(model, "out.gguf", &(ft_save_opts){.type = FT_TYPE_F16}) writes a
      whole model with the adapter merged (every key, the tokenizer and all other tensors
      copied): it loads in llama.cpp with no adapter at all.
      Every method is a row of one interface (add its parameters, init them, the hooks the one
      forward consults: linear, after a sublayer, embeddings, prefix, soft prompt; merge, bake,
      PEFT's files) and attaches through one call, ft_peft_attach(&p, model,
      &(ft_peft_opts){.method = FT_PEFT_...}) (ft_peft_opts_default(method) has its defaults);
      all share the switch-off, the params and the files:
         FT_PEFT_LORA     .lora as above
         FT_PEFT_ADAPTER  bottleneck adapters x + up(act(down(x))) on the attention and MLP
                          outputs (Houlsby) or the MLP's only (Pfeiffer); identity at the start
         FT_PEFT_PREFIX   learned keys/values (P per layer) seen by every query, optionally from
                          a reparameterisation MLP; tokens sit at positions P.. as in transformers
         FT_PEFT_PROMPT   P soft token embeddings before the input (random, vocabulary or text init)
         FT_PEFT_IA3      ones-initialised scales of k, v outputs and down_proj's input
         FT_PEFT_FULL     f32 master copies of every weight (a quantized base is dequantized)
                          except .freeze patterns ("token_embd.*,blk.0.*") and masked layers
         FT_PEFT_LOHA     LoHa: dW = (alpha/r) (w1_a w1_b) * (w2_a w2_b), .lora's r, alpha,
                          targets; equal to PEFT's LoHa (tests/test_peft_ref.c), mergeable
      A method of your own implements the same hooks: ft_peft_attach_custom(&p, model, &def,
      seed) with an ft_peft_method_def (add, init, linear, after), then everything above works
      for it; its values go to finetune.h's own GGUF and come back with ft_peft_read.
      .reward_head adds a scalar head on the last hidden state (a reward model, or PPO's value
      head). PEFT's format holds LoRA/DoRA, LoHa, IA3, prompt and prefix tuning (keys, shapes, config
      and HF's k order as PEFT 0.21 has them); finetune.h's own GGUF holds every method.
      Gradient checkpointing (ft_ctx_set_checkpointing) recomputes each layer in backward with
      bit-identical gradients, for every method, at ~1/8 of the activation memory.

   9. Data and training
      ft_dataset_load reads strict JSONL (text, instruction, chat, preference, KTO, prompt) through
      the chat template, with loss on assistant replies only; bad lines are reported as
      file:line:column; ft_dataset_new + ft_dataset_add make a dataset of token ids you tokenized
      yourself. ft_train trains any objective (section 10); for SFT and continued pretraining:
      micro-batches (padded, or packed with per-document attention), gradient accumulation,
      clipping, AdamW or SGD,
      constant / linear / cosine schedules with warmup, LoRA+ rates, a NaN guard that never
      touches the weights, atomic checkpoints (ft_checkpoint_save) from which a run resumes bit
      for bit. ft_eval_loss and ft_eval_generate measure loss, perplexity and exact-match
      accuracy; ft_eval_mc scores multiple-choice items (ft_mc_load) as lm-evaluation-harness
      does (each choice's log-likelihood after the context; acc, acc_norm); ft_svg_plot draws
      the curves. ft_dataset_mix mixes datasets by ratio (replay);
      ft_mix_ratios gives several tasks FLAN / T5 temperature-sampling rates (min(n_i, cap)^(1/T)).

   10. Objectives: one table, one training loop (the definitions of TRL; tests/test_trl.c)
      Every objective is a row of one table (ft_objective_get(id): its name, how a micro-batch is
      made, the data it reads, whether it needs the reference, per-token means or sums, its
      defaults, its pair loss, what it logs); ft_train runs them all with one loop that owns the
      schedule, accumulation, clipping, the NaN guard, the optimizer, evaluation, callbacks and
      checkpoints that resume bit for bit, GRPO and PPO included. Start from
      ft_train_opts_default(objective): every default in one place, the CLI's too.
         FT_OBJ_SFT, FT_OBJ_CPT        cross-entropy on the answers / on packed plain text
         FT_OBJ_DPO and its family     over the log-ratios c = policy - reference of chosen and
                                       rejected (the reference: the model with its adapter off):
                                       dpo (cDPO with label smoothing), ipo, hinge, robust,
                                       exo_pair, nca_pair, bco_pair, sppo_hard, aot, aot_unpaired,
                                       apo_zero, apo_down, discopop, sigmoid_norm (TRL 1.16's
                                       loss_type values; the formulas sit in [objectives])
         FT_OBJ_SIMPO, FT_OBJ_ORPO     reference-free: length-normalised margin gamma; odds ratio
                                       with a stable log(1 - p) plus the chosen NLL
         FT_OBJ_KTO                    ft_kto_loss on unpaired feedback: KL point from the batch's
                                       mismatched prompt/completion pairs
         FT_OBJ_RM                     Bradley-Terry on the reward head's scores (margin,
                                       centering); ft_eval_reward: pairwise accuracy
         FT_OBJ_GRPO, FT_OBJ_PPO       from prompt data (ft_train_opts.rl): batched sampling with
                                       the KV cache, rewards from ft_reward_term
                                       (ft_reward_number, ft_reward_regex, ft_reward_length,
                                       ft_reward_model, or your own), then GRPO
                                       (ft_grpo_advantages; ft_grpo_loss: clipped ratio, k3 KL,
                                       grpo/bnpo/dr_grpo/dapo aggregation) or PPO
                                       (ft_ppo_prepare: KL-penalised rewards, GAE, whitening as
                                       TRL 1.9; ft_ppo_loss; the value head is the adapter's
                                       scalar head). A rollout batch per micro-batch serves
                                       rl.iterations optimizer steps; checkpoints fall between
                                       batches and hold the adaptive KL coefficient.
      A loss of your own is a row of your own: copy a row, give it a name and an ft_pair_loss_fn
      over ft_pair_logps, and pass it as ft_train_opts.custom (examples/06_custom_objective.c).
      ft_eval_rl scores greedy completions. Every enum's names (what the command line and the
      configs say) come from one registry: ft_enum_name / ft_enum_parse / ft_enum_count.

   11. Merging: ft_merge_models (linear, task arithmetic, TIES, DARE as mergekit 0.1.5 defines
       them) over models and adapters, one tensor at a time, into a GGUF.

   12. Tools: build/ft (info, generate, train, eval, merge, export, logits, quantize, synth, sweep),
       tools/fetch-model, tools/bench, tools/ref (reference scripts: fixtures, adapter_compat.py);
       see README.
       CUDA: every compute call goes through ft_gemm and the row kernels of the [kernels]
       section; finetune_cuda.cu will implement that seam.

   IMPLEMENTATION SECTIONS (in data-flow order)
      [platform]   allocator, errors, timing, thread pool
      [memory]     storage types, f16/bf16, RNG, arena, tensors, parameter blocks
      [kernels]    SIMD vector primitives, GEMM, row kernels (norms, softmax, rope, attention)
      [autograd]   tape, ops (forward + backward), backward pass, gradient checkpointing
      [quant]      GGML block formats, NF4 (bitsandbytes) with double quantization
      [gguf]       GGUF reader and writer, directories, atomic files, safetensors
      [hf]         Hugging Face model directories read as the GGUF the converter makes of them
      [tokenizer]  BPE / SentencePiece, pre-tokenizers, chat templates
      [model]      the architectures (a table of differences), mixture of experts and router
                   losses, NF4 in GGUF, KV cache, sampling, generation
      [peft]       the PEFT interface, what adapter files share, and the methods, each with its
                   llama.cpp / PEFT files: LoRA / DoRA, LoHa, merging a weight delta, bottleneck
                   adapters, prefix and prompt tuning, IA3, full fine-tuning, your own
      [data]       strict JSON / JSONL
      [dataset]    JSONL -> token ids with loss masks, mixing
      [optim]      AdamW, SGD
      [objectives] losses over log-probabilities: the DPO family, SimPO, ORPO, RM, KTO
      [train]      schedules, checkpoints, batches, sequence log-probs, evaluation of losses and
                   preferences, the objective table, the micro-batches made from data
      [rl]         GRPO and PPO losses, rewards and a regex engine, rollouts, rollout micro-batches
                   (FT_NO_RL)
      [loop]       the training loop of every objective, generation-based evaluation, SVG plots
      [export]     finetune.h's own adapter file (every method), the format policy, merged
                   models
      [synth]      synthetic instruction data: ROUGE-L, Self-Instruct, Evol-Instruct (FT_NO_SYNTH)
      [merge]      merging models and adapters: linear, task arithmetic, TIES, DARE (FT_NO_MERGE)
      [names]      every enum's names

   REVISION HISTORY
      0.1.0  core, GGUF and quants, llama family, tokenizer, generation, LoRA/DoRA, trainer;
             merged-model export, adapter conversion (GGUF <-> PEFT); NF4 with double
             quantization as bitsandbytes stores it (QLoRA), quantize at load, NF4 GGUF;
             bottleneck adapters, prefix / prompt tuning, IA3, full fine-tuning, LoRA on the
             embedding and head, gradient checkpointing; robust DPO, KTO, reward models; GRPO
             and PPO; model merging (TIES, DARE); Self-Instruct / Evol-Instruct; sweeps;
             training speed: the LoRA linear as one op on skinny kernels, pooled element-wise
             kernels, attention on GEMM blocks, a spinning pool (1.2-1.3x PyTorch + peft on CPU)
      0.1.1  every writer makes missing directories (ft_mkdirs); the implementation guards itself
             against a second inclusion (a build may include it in one file with other tests);
             ft_dataset_new / ft_dataset_add; ft_synth stops when the model proposes nothing
      0.2.0  seams: one training loop for every objective over an objective table (GRPO and PPO
             gain accumulation, LoRA+ and bit-identical resume; ft_train_rl folded in); TRL's
             exo_pair, nca_pair, bco_pair, sppo_hard, aot, aot_unpaired, apo_zero, apo_down,
             discopop, sigmoid_norm; PEFT methods behind one interface, LoHa, methods of your
             own; one adapter save / load with the format policy; *_opts_default(); every enum's
             names in one registry; FT_NO_RL, FT_NO_SYNTH, FT_NO_MERGE
      0.2.1  hard inputs: the reward regex is a Pike VM (linear time, $ as Python's re);
             non-finite values refused where they enter (options, JSON numbers, token scores,
             adapters read and written, checkpoints, base weights: ft_gguf_check_finite);
             adapter_config.json numbers range-checked; ft_dataset_without_targets (a seq_len
             that leaves nothing to learn is refused); ft_safetensors_open_memory; fuzz
             harnesses for every parser (tests/fuzz)
      0.3.0  the models people fine-tune: qwen3, gemma3, phi3, RoPE scaling (llama3, linear,
             YaRN: ft_rope_ext), sliding-window attention, mixture of experts (qwen3moe, olmoe,
             mixtral) with router losses; ft_gelu_tanh, ft_moe_combine; gemma / phi3 chat
             formats; ft_tokenizer_stop_ids
      0.3.1  Hugging Face model directories read wherever a GGUF is ([hf]: config.json,
             safetensors shards mapped, tokenizer.json, chat template, generation config);
             multiple-choice evaluation as lm-evaluation-harness (ft_mc_load, ft_eval_mc)
*/
#ifndef FINETUNE_H
#define FINETUNE_H

#include <stddef.h>
#include <stdint.h>

#ifdef FT_STATIC
#if defined(__GNUC__) || defined(__clang__)
#define FT_API static __attribute__((unused))
#else
#define FT_API static
#endif
#else
#define FT_API extern
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- results ------------------------------------------------------------------------------ */
typedef enum ft_result {
    FT_OK              =  0,
    FT_ERR_NOMEM       = -1,   /* an allocation failed                                   */
    FT_ERR_IO          = -2,   /* a file could not be opened, read or written            */
    FT_ERR_FORMAT      = -3,   /* a file or record is malformed (offset/line in message) */
    FT_ERR_SHAPE       = -4,   /* tensor shapes do not fit the op                        */
    FT_ERR_INVALID     = -5,   /* an argument is out of range                            */
    FT_ERR_UNSUPPORTED = -6,   /* a valid request this build cannot do                   */
    FT_ERR_NUMERIC     = -7,   /* NaN or infinity where a finite number is needed        */
    FT_ERR_INPLACE     = -8,   /* backward through a tensor modified after it was saved  */
    FT_ERR_STATE       = -9    /* a call out of order (e.g. backward twice)              */
} ft_result;

FT_API const char *ft_result_string(ft_result r);
FT_API const char *ft_last_error(void);                 /* this thread's last message        */
FT_API ft_result   ft_set_error(ft_result r, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;                                                   /* sets the message, returns r       */

/* ---- storage types (ids equal to GGML's, so GGUF types map one to one) ----------------------- */
typedef enum ft_type {
    FT_TYPE_F32 = 0,  FT_TYPE_F16 = 1,
    FT_TYPE_Q4_0 = 2, FT_TYPE_Q4_1 = 3, FT_TYPE_Q5_0 = 6, FT_TYPE_Q5_1 = 7, FT_TYPE_Q8_0 = 8,
    FT_TYPE_Q2_K = 10, FT_TYPE_Q3_K = 11, FT_TYPE_Q4_K = 12, FT_TYPE_Q5_K = 13, FT_TYPE_Q6_K = 14,
    FT_TYPE_Q8_1 = 9, FT_TYPE_Q8_K = 15, FT_TYPE_IQ4_NL = 20, FT_TYPE_I8 = 24, FT_TYPE_I16 = 25,
    FT_TYPE_I32 = 26, FT_TYPE_I64 = 27, FT_TYPE_F64 = 28, FT_TYPE_BF16 = 30,
    FT_TYPE_COUNT = 40,             /* the GGML ids are below this                              */
    FT_TYPE_NF4 = 64                /* bitsandbytes' NF4 + double quantization (not a GGML id:  */
} ft_type;                          /* the tensor's ->nf4 holds its state; see ft_quantize_nf4) */
FT_API const char *ft_type_name(ft_type t);
FT_API size_t      ft_type_row_bytes(ft_type t, int64_t n);   /* bytes of a row of n elements */
FT_API int         ft_type_block(ft_type t);                  /* elements per block, 0: unknown */

/* ---- NF4: QLoRA's 4-bit NormalFloat with double quantization, as bitsandbytes stores it -------
   A tensor of n weights, flattened row-major, is cut into blocks of 64 (the last may be short).
   Each weight is the index of the nearest of 16 NormalFloat values times its block's absmax;
   two indices per byte, the FIRST weight in the HIGH nibble (ceil(n/2) bytes). The absmax
   values are quantized again ("double quantization"): minus their mean (offset), in blocks of
   256, to 8-bit codes of bitsandbytes' signed dynamic map scaled by one f32 per 256 (absmax2).
   absmax = code[qabsmax] * absmax2 + offset (two f32 roundings), w = nf4[q] * absmax.
   4 + 8/64 + 32/16384 bits = 0.516 bytes per weight. A second-level block spans 16384 weights,
   across rows: NF4 is not a per-row format, so a tensor carries its whole state. */
#define FT_NF4_BLOCK  64            /* weights per absmax                                        */
#define FT_NF4_BLOCK2 256           /* absmax values per second-level scale                      */
typedef struct ft_nf4 {             /* the state of one NF4 tensor of n weights                  */
    const uint8_t *qabsmax;         /* (ceil(n/64)) 8-bit codes of absmax - offset               */
    const float   *absmax2;         /* (ceil(n/64/256)) second-level scales                      */
    const float   *code;            /* (256) the dynamic map the codes index                     */
    float          offset;          /* the mean of the first-level absmax                        */
} ft_nf4;
/* bitsandbytes' quantize_4bit(x, blocksize=64, quant_type="nf4", compress_statistics=True) on
   the CPU, byte for byte: packed (ceil(n/2)), qabsmax (ceil(n/64)), absmax2 (ceil(n/16384)),
   offset. FT_ERR_NUMERIC for a NaN or infinity in x. (The offset is torch's single-thread mean;
   past 32768 blocks torch may split the sum across threads and round differently.) */
FT_API ft_result ft_quantize_nf4(const float *x, int64_t n, uint8_t *packed, uint8_t *qabsmax,
                                 float *absmax2, float *offset);
/* y[0..n) = weights i0 .. i0+n of an NF4 tensor (bitsandbytes' dequantize_4bit, bit for bit) */
FT_API void      ft_dequantize_nf4(const uint8_t *packed, const ft_nf4 *q, int64_t i0, int64_t n, float *y);
/* bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8), as torch's
   AVX2 / AVX-512 / NEON kernels compute it (the nested state's code of ft_quantize_nf4) */
FT_API void      ft_nf4_dynamic_map(float code[256]);
FT_API int64_t   ft_nf4_blocks(int64_t n);                  /* ceil(n / 64)                      */
FT_API int64_t   ft_nf4_blocks2(int64_t n);                 /* ceil(n / 64 / 256)                */

/* ---- f16 / bf16 conversion ---------------------------------------------------------------- */
FT_API float    ft_fp16_to_fp32(uint16_t h);
FT_API uint16_t ft_fp32_to_fp16(float f);                     /* round to nearest even          */
FT_API float    ft_bf16_to_fp32(uint16_t h);
FT_API uint16_t ft_fp32_to_bf16(float f);                     /* round to nearest even          */

/* ---- random numbers: splitmix64-seeded xoshiro128+-style generator, stable across platforms -- */
typedef struct ft_rng { uint64_t s[2]; } ft_rng;
FT_API void     ft_rng_seed(ft_rng *r, uint64_t seed);
FT_API uint64_t ft_rng_u64(ft_rng *r);
FT_API float    ft_rng_uniform(ft_rng *r);                    /* [0, 1)                          */
FT_API float    ft_rng_normal(ft_rng *r);                     /* N(0, 1), Box-Muller             */

/* ---- tensors ------------------------------------------------------------------------------ */
#define FT_MAX_DIMS 4
enum {
    FT_TENSOR_REQUIRES_GRAD = 1u << 0,   /* backward accumulates into ->grad                   */
    FT_TENSOR_PARAM         = 1u << 1,   /* lives in an ft_params block                         */
    FT_TENSOR_NO_TAPE       = 1u << 2    /* made while grad mode was off                        */
};

typedef struct ft_tensor {
    ft_type  type;                  /* storage type of data                                   */
    int      ndim;                  /* 1..4                                                   */
    int64_t  shape[FT_MAX_DIMS];    /* outermost first; unused dims are 1                     */
    void    *data;                  /* 64-byte aligned unless a view                          */
    float   *grad;                  /* f32, same shape; allocated when first needed           */
    struct ft_tensor *view_of;      /* storage owner for views (reshape, rows), else NULL      */
    int64_t  view_offset;           /* element offset into view_of                            */
    uint32_t flags;                 /* FT_TENSOR_*                                            */
    uint32_t version;               /* bumped by every in-place write                         */
    const char *name;               /* parameters have names; may be NULL                    */
    const ft_nf4 *nf4;              /* FT_TYPE_NF4 only: the state (data: the packed nibbles) */
} ft_tensor;

FT_API int64_t ft_numel(const ft_tensor *t);
FT_API int64_t ft_nrows(const ft_tensor *t);                  /* numel / last dim               */
FT_API int     ft_same_shape(const ft_tensor *a, const ft_tensor *b);
FT_API void    ft_tensor_mark_modified(ft_tensor *t);         /* call after writing ->data by hand
                                                                  into a tensor the tape saved     */

/* ---- context: thread pool, arena, tape, RNG ------------------------------------------------ */
typedef struct ft_ctx ft_ctx;
typedef void (*ft_log_fn)(void *user, int level, const char *msg);   /* level 0 info, 1 warn   */
typedef struct ft_ctx_opts {
    int       n_threads;            /* 0: $FT_THREADS or the number of online CPUs              */
    uint64_t  seed;                 /* RNG seed for dropout & co (0 means 0x5eed)               */
    size_t    arena_bytes;          /* initial arena size (0: 64 MiB); it grows once if needed */
    ft_log_fn log;                  /* optional log callback (default: stderr for warnings)    */
    void     *log_user;
} ft_ctx_opts;

FT_API ft_ctx_opts ft_ctx_opts_default(void);    /* every CPU ($FT_THREADS), seed 0x5eed, 64 MiB arena */
FT_API ft_result ft_ctx_init(ft_ctx **out, const ft_ctx_opts *opts);   /* opts may be NULL      */
FT_API void      ft_ctx_free(ft_ctx *ctx);
FT_API void      ft_ctx_reset(ft_ctx *ctx);        /* start of a step: empty tape and arena        */
FT_API ft_result ft_ctx_status(const ft_ctx *ctx); /* first op error since the last reset          */
FT_API int       ft_ctx_set_grad(ft_ctx *ctx, int enabled);   /* returns the previous mode       */
FT_API int       ft_ctx_threads(const ft_ctx *ctx);
FT_API ft_result ft_ctx_set_threads(ft_ctx *ctx, int n);
FT_API ft_rng   *ft_ctx_rng(ft_ctx *ctx);
FT_API size_t    ft_ctx_arena_used(const ft_ctx *ctx);
FT_API size_t    ft_ctx_arena_capacity(const ft_ctx *ctx);
FT_API size_t    ft_ctx_arena_peak(const ft_ctx *ctx);   /* most arena bytes in use at once since
                                                            the last reset (overflow included)  */
/* gradient checkpointing: the model keeps only each decoder layer's input and recomputes the
   layer in backward (less activation memory, about one more forward). Returns the previous mode. */
FT_API int       ft_ctx_set_checkpointing(ft_ctx *ctx, int enabled);
FT_API size_t    ft_ctx_mallocs(const ft_ctx *ctx);  /* count of mallocs done by arena and tape */
FT_API void      ft_log_message(ft_ctx *ctx, int level, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Tensors in the per-step arena (zero-filled). Return NULL when out of memory. */
FT_API ft_tensor *ft_tensor_new(ft_ctx *ctx, ft_type type, int ndim, const int64_t *shape);
FT_API ft_tensor *ft_tensor_1d(ft_ctx *ctx, int64_t n0);
FT_API ft_tensor *ft_tensor_2d(ft_ctx *ctx, int64_t n0, int64_t n1);
FT_API ft_tensor *ft_tensor_3d(ft_ctx *ctx, int64_t n0, int64_t n1, int64_t n2);
FT_API ft_tensor *ft_tensor_4d(ft_ctx *ctx, int64_t n0, int64_t n1, int64_t n2, int64_t n3);
FT_API void      *ft_arena_alloc(ft_ctx *ctx, size_t bytes);  /* 64-byte aligned, not zeroed     */
/* an NF4 weight (rows, cols) in the arena over the caller's packed nibbles and state (both
   referenced, not copied; see ft_quantize_nf4): usable as the b of ft_matmul(x, W, 0, 1) */
FT_API ft_tensor *ft_tensor_nf4(ft_ctx *ctx, int64_t rows, int64_t cols, const uint8_t *packed, const ft_nf4 *q);

/* ---- parameter blocks: one allocation for all values, one for all gradients ----------------- */
typedef struct ft_params ft_params;
FT_API ft_result  ft_params_init(ft_params **out);
FT_API void       ft_params_free(ft_params *p);
FT_API ft_tensor *ft_params_add(ft_params *p, const char *name, int ndim, const int64_t *shape);
FT_API ft_result  ft_params_alloc(ft_params *p);             /* after the last ft_params_add   */
FT_API void       ft_params_zero_grad(ft_params *p);
FT_API int        ft_params_count(const ft_params *p);
FT_API ft_tensor *ft_params_get(ft_params *p, int i);
FT_API ft_tensor *ft_params_find(ft_params *p, const char *name);
FT_API int64_t    ft_params_numel(const ft_params *p);
FT_API void       ft_params_init_uniform(ft_params *p, ft_tensor *t, float lo, float hi, ft_ctx *ctx);
FT_API void       ft_params_init_normal(ft_params *p, ft_tensor *t, float mean, float std, ft_ctx *ctx);

/* ---- kernels (public so tools/bench and tests can reach them) ------------------------------- */
/* C (M, N) [+]= op(A) op(B): A (M, K) or (K, M) with ta, B (K, N) or (N, K) with tb; row strides
   lda, ldb, ldc. Runs on the context's thread pool. */
FT_API void ft_gemm(ft_ctx *ctx, int ta, int tb, int64_t M, int64_t N, int64_t K,
                    const float *A, int64_t lda, const float *B, int64_t ldb,
                    float *C, int64_t ldc, int accumulate);
FT_API void ft_gemm_ref(int ta, int tb, int64_t M, int64_t N, int64_t K,
                        const float *A, int64_t lda, const float *B, int64_t ldb,
                        float *C, int64_t ldc, int accumulate);
FT_API const char *ft_simd_name(void);               /* "avx512", "avx2", "neon" or "scalar"   */
FT_API double     ft_time_seconds(void);             /* monotonic clock                        */

/* ---- ops (autograd) ------------------------------------------------------------------------ */
typedef enum ft_op {
    FT_OP_NONE = 0,
    FT_OP_MATMUL, FT_OP_ADD, FT_OP_SUB, FT_OP_MUL, FT_OP_SCALE, FT_OP_SUM, FT_OP_MEAN,
    FT_OP_RMSNORM, FT_OP_LAYERNORM, FT_OP_ROPE, FT_OP_ATTENTION, FT_OP_SOFTMAX, FT_OP_LOG_SOFTMAX,
    FT_OP_SILU, FT_OP_GELU, FT_OP_TANH, FT_OP_RELU, FT_OP_SIGMOID, FT_OP_LOGSIGMOID, FT_OP_EXP,
    FT_OP_LOG, FT_OP_SWIGLU, FT_OP_EMBEDDING, FT_OP_CROSS_ENTROPY, FT_OP_LOGPROB, FT_OP_CLAMP,
    FT_OP_MINIMUM, FT_OP_MAXIMUM, FT_OP_WHERE, FT_OP_DROPOUT, FT_OP_CONCAT, FT_OP_SLICE,
    FT_OP_RESHAPE, FT_OP_LOG1MEXP,
    FT_OP_CHECKPOINT,               /* a segment recomputed in backward (gradient checkpointing) */
    FT_OP_LORA_LINEAR,              /* x W^T + s (x A^T) B^T as one op                         */
    FT_OP_GELU_TANH,
    FT_OP_MOE_COMBINE,              /* the weighted sum of each token's expert outputs          */
    FT_OP_LINEAR_XENT,              /* the head and cross-entropy / log-probs, chunk by chunk   */
    FT_OP_COUNT
} ft_op;
FT_API const char *ft_op_name(ft_op op);

/* y = op(a) op(b): a (..., M, K) or (..., K, M) with ta; b (K, N) or (N, K) with tb, either 2-D
   (shared by every batch) or with the same batch dims as a. b may be F16/BF16 when it needs no
   gradient (frozen weights). */
FT_API ft_tensor *ft_matmul(ft_ctx *ctx, ft_tensor *a, ft_tensor *b, int ta, int tb);
/* A linear layer with a LoRA branch as one op: y = x W^T + scale (xd A^T) B^T, where x is
   (..., in), W (out, in) of any storage type (f32 when it takes a gradient), A (r, in), B (out, r)
   and xd the branch's input (x after dropout; NULL: x). It keeps only the (r, rows) low-rank
   activations for the backward instead of x W^T, the branch and the sum. */
FT_API ft_tensor *ft_lora_linear(ft_ctx *ctx, ft_tensor *x, ft_tensor *W, ft_tensor *A, ft_tensor *B, float scale, ft_tensor *xd);
/* elementwise with NumPy broadcasting (shapes aligned at the last dim) */
FT_API ft_tensor *ft_add(ft_ctx *ctx, ft_tensor *a, ft_tensor *b);
FT_API ft_tensor *ft_sub(ft_ctx *ctx, ft_tensor *a, ft_tensor *b);
FT_API ft_tensor *ft_mul(ft_ctx *ctx, ft_tensor *a, ft_tensor *b);
FT_API ft_tensor *ft_scale(ft_ctx *ctx, ft_tensor *a, float s);
FT_API ft_tensor *ft_sum(ft_ctx *ctx, ft_tensor *a);            /* all elements -> shape (1)   */
FT_API ft_tensor *ft_mean(ft_ctx *ctx, ft_tensor *a);
FT_API ft_tensor *ft_sum_rows(ft_ctx *ctx, ft_tensor *a);       /* over the last dim           */
FT_API ft_tensor *ft_mean_rows(ft_ctx *ctx, ft_tensor *a);
/* y = x / sqrt(mean(x^2) + eps) * w          (w: (C) or NULL; over the last dim C)           */
FT_API ft_tensor *ft_rmsnorm(ft_ctx *ctx, ft_tensor *x, ft_tensor *w, float eps);
/* y = (x - mean) / sqrt(var + eps) * w + b   (w, b: (C) or NULL)                              */
FT_API ft_tensor *ft_layernorm(ft_ctx *ctx, ft_tensor *x, ft_tensor *w, ft_tensor *b, float eps);

enum { FT_ROPE_NORM = 0,    /* rotate adjacent pairs (x[2i], x[2i+1]): llama.cpp's llama      */
       FT_ROPE_NEOX = 2 };  /* rotate halves (x[i], x[i + n_rot/2]): qwen2, HF rotate_half   */
/* x (..., n_head * D) with one position per row of the leading dims: pos[nrows(x)];
   theta_i = pos * base^(-2i / n_rot), the first n_rot dims of each head rotated              */
FT_API ft_tensor *ft_rope(ft_ctx *ctx, ft_tensor *x, const int32_t *pos, int n_head, int n_rot,
                          float base, int mode);
/* RoPE with the context-extension schemes, as llama.cpp's ggml_rope_ext applies them. For pair i:
     te = pos * base^(-2i / n_rot) / freq_factors[i]     (the extrapolated angle)
     ti = freq_scale * te                                  (the interpolated angle; linear scaling)
     theta = ti (1 - mix_i) + te mix_i,  mix_i = ext_factor * (1 - clamp((i - lo) / (hi - lo), 0, 1))
   where [lo, hi] is YaRN's correction range of dims (from beta_fast, beta_slow, n_ctx_orig), and
   each rotation is scaled by attn_factor (times 1 + 0.1 ln(1 / freq_scale) when ext_factor != 0).
   llama3: freq_factors from the rope_freqs tensor; linear: freq_scale = 1 / factor; YaRN:
   freq_scale = 1 / factor, ext_factor 1. Zeros mean the defaults: freq_scale 1, attn_factor 1,
   beta_fast 32, beta_slow 1.                                                                  */
typedef struct ft_rope_opts {
    int n_rot, mode;                /* rotated dims per head (even), FT_ROPE_NORM or _NEOX       */
    float base;                     /* rope.freq_base                                            */
    float freq_scale;               /* 1 / the scaling factor (linear, YaRN); 0: 1               */
    const float *freq_factors;      /* (n_rot / 2) divisors of the frequencies, or NULL          */
    float ext_factor;               /* YaRN's blend of extrapolation: 1 for YaRN, 0 off          */
    float attn_factor;              /* every rotation times this; 0: 1                           */
    float beta_fast, beta_slow;     /* YaRN's correction range; 0: 32, 1                         */
    int64_t n_ctx_orig;             /* YaRN: the context the model was trained at                */
} ft_rope_opts;
FT_API ft_tensor *ft_rope_ext(ft_ctx *ctx, ft_tensor *x, const int32_t *pos, int n_head, const ft_rope_opts *o);

typedef struct ft_attn_opts {
    int n_head, n_head_kv;          /* query heads, key/value heads (n_head % n_head_kv == 0)   */
    float scale;                    /* 0: 1/sqrt(D)                                            */
    int causal;                     /* query t sees keys j <= q_offset + t                     */
    int64_t q_offset;               /* keys before the first query (a KV cache)                */
    const int64_t *q_offsets;       /* optional (B): a q_offset per sequence (overrides)       */
    const int32_t *seg;             /* optional (B, T) document ids: attend within a document  */
    ft_tensor *prefix_k, *prefix_v; /* optional (P, n_head_kv * D), seen by every query       */
    int64_t window;                 /* sliding window: query i (q_offset + t) sees keys j with
                                       i - j < window only (gemma3's local layers); 0: all      */
} ft_attn_opts;
/* q (B, T, H*D), k and v (B, Tk, Hkv*D) -> (B, T, H*D); softmax(q k^T * scale + mask) v      */
FT_API ft_tensor *ft_attention(ft_ctx *ctx, ft_tensor *q, ft_tensor *k, ft_tensor *v,
                               const ft_attn_opts *opts);

FT_API ft_tensor *ft_softmax(ft_ctx *ctx, ft_tensor *x);          /* over the last dim         */
FT_API ft_tensor *ft_log_softmax(ft_ctx *ctx, ft_tensor *x);
FT_API ft_tensor *ft_silu(ft_ctx *ctx, ft_tensor *x);             /* x * sigmoid(x)            */
FT_API ft_tensor *ft_gelu(ft_ctx *ctx, ft_tensor *x);             /* x * Phi(x), exact (erf)  */
/* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): PyTorch's gelu(approximate="tanh"), gemma's  */
FT_API ft_tensor *ft_gelu_tanh(ft_ctx *ctx, ft_tensor *x);
FT_API ft_tensor *ft_tanh(ft_ctx *ctx, ft_tensor *x);
FT_API ft_tensor *ft_relu(ft_ctx *ctx, ft_tensor *x);
FT_API ft_tensor *ft_sigmoid(ft_ctx *ctx, ft_tensor *x);
FT_API ft_tensor *ft_logsigmoid(ft_ctx *ctx, ft_tensor *x);       /* log(1/(1+e^-x)), stable   */
FT_API ft_tensor *ft_exp(ft_ctx *ctx, ft_tensor *x);
FT_API ft_tensor *ft_log(ft_ctx *ctx, ft_tensor *x);
FT_API ft_tensor *ft_log1mexp(ft_ctx *ctx, ft_tensor *x);         /* log(1 - e^x), x < 0, stable */
FT_API ft_tensor *ft_swiglu(ft_ctx *ctx, ft_tensor *gate, ft_tensor *up);   /* silu(g) * u    */
/* table (V, C) f32/f16/bf16, ids[n] -> (n, C) */
FT_API ft_tensor *ft_embedding(ft_ctx *ctx, ft_tensor *table, const int32_t *ids, int64_t n);
/* the head and the loss in one: logits = h W^T (soft-capped as cap tanh(z / cap) when cap > 0)
   made, used and dropped chunk by chunk of rows - and made again in backward - so the (N, V)
   logits never exist at once (a 262k vocabulary is 1 GiB of them per 1,024 tokens).
   per_token 0: the mean cross-entropy (1) over the targets != ignore, as ft_cross_entropy;
   1: each row's log p(target) (N), 0 where ignored, as ft_logprob. h (N, C) f32; W (V, C) any
   type a matmul takes (a gradient for W only when it is f32).                                  */
FT_API ft_tensor *ft_linear_cross_entropy(ft_ctx *ctx, ft_tensor *h, ft_tensor *W, const int32_t *targets,
                                          int32_t ignore_index, float softcap, int per_token);
/* mixture of experts: out (N, C), out[n] = sum_j w[n, j] ys[sel[n k + j]][row[n k + j]] - each
   token's k expert outputs weighted by its routing weights w (N, k). ys: n_exp tensors (n_e, C),
   the outputs of each expert for the tokens routed to it (NULL where none was); sel, row (N k):
   the expert of slot j of token n and the token's row in that expert's output.               */
FT_API ft_tensor *ft_moe_combine(ft_ctx *ctx, ft_tensor *const *ys, int n_exp, const int32_t *sel,
                                 const int32_t *row, ft_tensor *w);
/* mean over rows with target != ignore of -log softmax(logits)[target]; logits (N, V) -> (1) */
FT_API ft_tensor *ft_cross_entropy(ft_ctx *ctx, ft_tensor *logits, const int32_t *targets,
                                   int32_t ignore_index);
/* per-row log softmax(logits)[target] -> (N); rows whose target == ignore give 0             */
FT_API ft_tensor *ft_logprob(ft_ctx *ctx, ft_tensor *logits, const int32_t *targets,
                             int32_t ignore_index);
FT_API ft_tensor *ft_clamp(ft_ctx *ctx, ft_tensor *x, float lo, float hi);
FT_API ft_tensor *ft_minimum(ft_ctx *ctx, ft_tensor *a, ft_tensor *b);     /* broadcasting */
FT_API ft_tensor *ft_maximum(ft_ctx *ctx, ft_tensor *a, ft_tensor *b);
/* cond != 0 ? a : b elementwise (same shapes); cond gets no gradient */
FT_API ft_tensor *ft_where(ft_ctx *ctx, ft_tensor *cond, ft_tensor *a, ft_tensor *b);
/* zero each element with probability p (the context's RNG), scale the rest by 1/(1-p) */
FT_API ft_tensor *ft_dropout(ft_ctx *ctx, ft_tensor *x, float p);
FT_API ft_tensor *ft_concat(ft_ctx *ctx, ft_tensor *a, ft_tensor *b, int axis);
FT_API ft_tensor *ft_slice(ft_ctx *ctx, ft_tensor *x, int axis, int64_t start, int64_t len);
/* views sharing storage (and gradient storage) with x */
FT_API ft_tensor *ft_reshape(ft_ctx *ctx, ft_tensor *x, int ndim, const int64_t *shape);
FT_API ft_tensor *ft_view_rows(ft_ctx *ctx, ft_tensor *x, int64_t row0, int64_t nrows);  /* dim 0 */
/* in-place (never differentiated through: they bump the version) */
FT_API void       ft_scale_inplace(ft_tensor *x, float s);
FT_API void       ft_add_inplace(ft_tensor *x, const ft_tensor *y);   /* same shape            */

/* Gradient checkpointing of any segment: y = fn(ctx, user, x), y of x's shape, as one tape node.
   fn's intermediates are given back as soon as it returns and recomputed in backward, with the
   RNG state of the forward. fn may read x, its arena copy of the `bytes` at user, the RNG and
   tensors made before the call (not written in place until backward). */
typedef ft_tensor *(*ft_segment_fn)(ft_ctx *ctx, void *user, ft_tensor *x);
FT_API ft_tensor *ft_checkpoint(ft_ctx *ctx, ft_segment_fn fn, const void *user, size_t bytes, ft_tensor *x);

/* Walk the tape from a scalar loss (seed gradient 1) or any tensor with seed gradient dy. */
FT_API ft_result  ft_backward(ft_ctx *ctx, ft_tensor *loss);
FT_API ft_result  ft_backward_from(ft_ctx *ctx, ft_tensor *y, const float *dy);
FT_API int        ft_tape_length(const ft_ctx *ctx);
FT_API ft_op      ft_tape_op(const ft_ctx *ctx, int i);

/* ---- GGUF files ------------------------------------------------------------------------------ */
typedef enum ft_gguf_type {
    FT_GGUF_UINT8 = 0, FT_GGUF_INT8, FT_GGUF_UINT16, FT_GGUF_INT16, FT_GGUF_UINT32, FT_GGUF_INT32,
    FT_GGUF_FLOAT32, FT_GGUF_BOOL, FT_GGUF_STRING, FT_GGUF_ARRAY, FT_GGUF_UINT64, FT_GGUF_INT64,
    FT_GGUF_FLOAT64, FT_GGUF_TYPE_COUNT
} ft_gguf_type;
typedef struct ft_gguf_str { const char *s; uint64_t n; } ft_gguf_str;   /* not NUL-terminated */
typedef struct ft_gguf_kv {
    ft_gguf_str  key;
    ft_gguf_type type;          /* value type; FT_GGUF_ARRAY for arrays                        */
    ft_gguf_type arr_type;      /* element type of an array (= type for scalars)               */
    uint64_t     n;             /* element count (1 for scalars)                               */
    const void  *data;          /* numeric values as stored (little-endian)                    */
    ft_gguf_str *strs;          /* string values (n of them)                                   */
} ft_gguf_kv;
typedef struct ft_gguf_tensor {
    ft_gguf_str name;
    int         n_dims;
    int64_t     ne[4];          /* GGUF order: ne[0] is the innermost (row length)             */
    ft_type     type;
    uint64_t    offset;         /* from the start of the data section                          */
    const void *data;           /* into the mapped file                                        */
    size_t      nbytes;
} ft_gguf_tensor;
typedef struct ft_gguf ft_gguf;
typedef struct ft_gguf_writer ft_gguf_writer;

FT_API ft_result ft_gguf_open(ft_gguf **out, const char *path);          /* mmap, bounds-checked */
FT_API ft_result ft_gguf_open_memory(ft_gguf **out, const void *data, size_t size, const char *name);
FT_API void      ft_gguf_close(ft_gguf *g);
FT_API const char *ft_gguf_path(const ft_gguf *g);
FT_API uint32_t  ft_gguf_version(const ft_gguf *g);
FT_API size_t    ft_gguf_alignment(const ft_gguf *g);
FT_API int64_t   ft_gguf_n_kv(const ft_gguf *g);
FT_API const ft_gguf_kv *ft_gguf_kv_at(const ft_gguf *g, int64_t i);
FT_API const ft_gguf_kv *ft_gguf_find(const ft_gguf *g, const char *key);
FT_API int       ft_gguf_get_int(const ft_gguf *g, const char *key, int64_t *out);    /* 1: found */
FT_API int       ft_gguf_get_float(const ft_gguf *g, const char *key, double *out);
FT_API int       ft_gguf_get_str(const ft_gguf *g, const char *key, ft_gguf_str *out);
FT_API int64_t   ft_gguf_kv_int(const ft_gguf_kv *kv, uint64_t i);     /* element i, any numeric type (floats
                                                                          truncated, saturated, NaN 0) */
FT_API double    ft_gguf_kv_float(const ft_gguf_kv *kv, uint64_t i);
FT_API int64_t   ft_gguf_n_tensors(const ft_gguf *g);
FT_API const ft_gguf_tensor *ft_gguf_tensor_at(const ft_gguf *g, int64_t i);
FT_API const ft_gguf_tensor *ft_gguf_find_tensor(const ft_gguf *g, const char *name);
FT_API ft_result ft_gguf_check_finite(const ft_gguf *g);   /* every decodable tensor: no NaN / inf */

FT_API ft_result ft_gguf_writer_init(ft_gguf_writer **out);
FT_API void      ft_gguf_writer_free(ft_gguf_writer *w);
FT_API ft_result ft_gguf_set_int(ft_gguf_writer *w, const char *key, ft_gguf_type type, int64_t v);
FT_API ft_result ft_gguf_set_float(ft_gguf_writer *w, const char *key, ft_gguf_type type, double v);
FT_API ft_result ft_gguf_set_str(ft_gguf_writer *w, const char *key, const char *s);
FT_API ft_result ft_gguf_set_array(ft_gguf_writer *w, const char *key, ft_gguf_type elem, const void *data, uint64_t n);
FT_API ft_result ft_gguf_set_str_array(ft_gguf_writer *w, const char *key, const ft_gguf_str *strs, uint64_t n);
FT_API ft_result ft_gguf_copy_kv(ft_gguf_writer *w, const ft_gguf_kv *kv);
FT_API ft_result ft_gguf_add_tensor(ft_gguf_writer *w, const char *name, ft_type type, int n_dims,
                                    const int64_t *ne, const void *data);  /* referenced until write */
FT_API ft_result ft_gguf_write(ft_gguf_writer *w, const char *path);   /* atomic: tmp, fsync, rename */
/* mkdir -p: every missing directory of `dir` (ft_mkdirs), or of the directory a file at `path`
   will be written in (ft_mkdirs_parent). FT_ERR_IO names the directory that could not be made and
   why (a file of that name, read-only, no space). Every writer of the library calls it. */
FT_API ft_result  ft_mkdirs(const char *dir);
FT_API ft_result  ft_mkdirs_parent(const char *path);

/* ---- tokenizer (from GGUF metadata) and chat templates ------------------------------------------ */
typedef enum ft_tokenizer_kind {
    FT_TOKENIZER_BPE_GPT2 = 1,      /* tokenizer.ggml.model "gpt2": byte-level BPE             */
    FT_TOKENIZER_SPM      = 2       /* "llama": SentencePiece BPE with <0xXX> byte fallback    */
} ft_tokenizer_kind;
typedef struct ft_tokenizer ft_tokenizer;
FT_API void    ft_tokenizer_free(ft_tokenizer *t);
/* text (len bytes of UTF-8; len < 0: NUL-terminated) -> ids, exactly as llama.cpp's
   llama_tokenize(add_special = add_bos, parse_special). add_bos: add BOS / EOS where the model's
   metadata asks for them (tokenizer.ggml.add_bos_token / add_eos_token). parse_special: control
   tokens written in the text ("<|im_start|>") become their ids; user-defined tokens always do.
   Returns the number of ids (only the first cap are written) or a negative ft_result.        */
FT_API int64_t ft_tokenize(const ft_tokenizer *t, const char *text, int64_t len, int32_t *ids,
                           int64_t cap, int add_bos, int parse_special);
/* one token's bytes into buf; returns their count, and writes nothing when that exceeds cap.
   Control and unknown tokens give "" unless show_special. Negative ft_result for a bad id.   */
FT_API int64_t ft_token_to_piece(const ft_tokenizer *t, int32_t id, char *buf, int64_t cap,
                                 int show_special);
/* ids -> text as llama.cpp's llama_detokenize(remove_special = 0, unparse_special =
   show_special): the pieces joined, then the model's clean-up of spaces where it has one.
   Returns the length; writes nothing when it exceeds cap; NUL-terminates when it is < cap.  */
FT_API int64_t ft_detokenize(const ft_tokenizer *t, const int32_t *ids, int64_t n, char *buf,
                             int64_t cap, int show_special);
FT_API int32_t ft_tokenizer_bos(const ft_tokenizer *t);       /* -1: none                      */
FT_API int32_t ft_tokenizer_eos(const ft_tokenizer *t);
FT_API int32_t ft_tokenizer_pad(const ft_tokenizer *t);
FT_API int64_t ft_tokenizer_n_vocab(const ft_tokenizer *t);
FT_API int32_t ft_tokenizer_find(const ft_tokenizer *t, const char *text);  /* exact token text */
/* the ids that end generation: eos and the end-of-turn tokens of the chat formats present
   (<|im_end|>, <|eot_id|>, <end_of_turn>, <|end|>) and those of the key finetune.stop_token_ids (a
   Hugging Face directory's generation_config.json), each once; at most FT_MAX_STOP. Returns the count. */
enum { FT_MAX_STOP = 13 };
FT_API int ft_tokenizer_stop_ids(const ft_tokenizer *t, int32_t *stop);
/* chat templates: the template is recognised by substrings as llama.cpp's
   llm_chat_detect_template does (or named: "chatml", "llama2", "llama2-sys", "llama2-sys-bos",
   "llama2-sys-strip", "llama3", "zephyr"; NULL means "chatml"), and rendered as
   llama_chat_apply_template renders it, with one difference: a ChatML template that carries a
   default system prompt (SmolLM2, Qwen2) gets it when the first message is not "system", as
   Hugging Face's jinja rendering does and llama.cpp does not. Returns the length (writes at
   most cap bytes, NUL-terminated when the length < cap) or a negative ft_result.              */
typedef struct ft_chat_msg { const char *role; const char *content; } ft_chat_msg;
FT_API int64_t ft_chat_apply(const char *template_src, const ft_chat_msg *msgs, int n,
                             int add_generation_prompt, char *buf, int64_t cap);

/* ---- models: the llama family from GGUF ----------------------------------------------------------- */
typedef enum ft_arch { FT_ARCH_LLAMA = 1, FT_ARCH_MISTRAL, FT_ARCH_QWEN2, FT_ARCH_QWEN3, FT_ARCH_GEMMA3,
                      FT_ARCH_PHI3, FT_ARCH_QWEN3MOE, FT_ARCH_OLMOE } ft_arch;
typedef struct ft_model_config {
    ft_arch arch; char arch_name[32];
    int64_t n_vocab, n_ctx_train, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_rot;
    int64_t n_params;               /* elements of every weight (tied embeddings once)           */
    float   rope_base, rms_eps;
    int     rope_type;              /* FT_ROPE_NORM (llama, mistral) or FT_ROPE_NEOX (the rest)  */
    int     tied_embeddings;        /* no output.weight: the head is token_embd                  */
    /* the architecture's differences from llama (its row of the [model] section's table)       */
    int     qkv_bias;               /* q, k, v biases (qwen2)                                    */
    int     qk_norm;                /* RMSNorm of q and k before RoPE: 1 per head (qwen3, gemma3),
                                       2 over the whole projection (olmoe)                      */
    int     post_norms;             /* RMSNorm of the attention and FFN outputs too (gemma3)     */
    int     ffn_gelu;               /* GeGLU with tanh GELU instead of SwiGLU (gemma3)           */
    int     fused;                  /* attn_qkv and a double ffn_up in the file (phi3)           */
    float   embd_scale;             /* token embeddings times this: sqrt(n_embd) (gemma3), 1     */
    float   attn_scale;             /* scores q.k times this: 1 / sqrt(head_dim) (but gemma3 27B) */
    float   logit_softcap;          /* logits = cap tanh(logits / cap) when > 0                  */
    int64_t swa_window;             /* sliding-window layers see this many keys; 0: none         */
    int64_t n_swa_layers;           /* how many layers slide (ft_model_layer_swa says which)     */
    float   rope_base_swa;          /* their RoPE base (gemma3: 10000)                           */
    char    rope_scaling[16];       /* "none", "linear", "yarn", "llama3" (a rope_freqs tensor)  */
    ft_rope_opts rope;              /* the other layers' RoPE, scaling included                  */
    /* mixture of experts (expert_count > 0): layers with a router (ffn_gate_inp) send each token
       to its n_expert_used most probable experts (softmax of the router logits)               */
    int64_t n_expert, n_expert_used, n_ff_exp;
    int     moe_norm;               /* the k weights renormalised to sum 1 (mixtral, qwen3moe)   */
} ft_model_config;
typedef struct ft_layer {           /* weights (out, in) in the file's types; NULL when absent   */
    ft_tensor *attn_norm, *wq, *wk, *wv, *wo, *bq, *bk, *bv, *ffn_norm, *w_gate, *w_up, *w_down;
    ft_tensor *q_norm, *k_norm;     /* (head_dim): qwen3, gemma3                                 */
    ft_tensor *post_attn_norm, *post_ffn_norm;   /* (n_embd): gemma3                             */
    ft_tensor *router;              /* (n_expert, n_embd), NULL in a dense layer                 */
    ft_tensor **gate_exps, **up_exps, **down_exps;   /* n_expert views of the 3-D expert tensors  */
} ft_layer;
typedef struct ft_model ft_model;
typedef struct ft_model_opts {
    ft_type quantize;               /* FT_TYPE_NF4: every linear weight (attention q, k, v, o; FFN
                                       gate, up, down) of any type -> NF4 at load (QLoRA's
                                       storage); 0 (FT_TYPE_F32): keep the file's types         */
    int     quantize_output;        /* with quantize: the output head too, when it is not tied  */
} ft_model_opts;
typedef struct ft_batch {
    int64_t B, T;                   /* sequences, tokens per sequence                            */
    const int32_t *ids;             /* (B*T) token ids                                           */
    const int32_t *pos;             /* (B*T) positions, or NULL for 0..T-1                       */
    const int32_t *seg;             /* (B*T) document ids for packed sequences, or NULL          */
} ft_batch;
typedef struct ft_kv_cache ft_kv_cache;

FT_API ft_result  ft_model_load(ft_model **out, const char *path, const ft_model_opts *opts);
FT_API void       ft_model_free(ft_model *m);
FT_API const ft_model_config *ft_model_config_get(const ft_model *m);
FT_API ft_gguf   *ft_model_gguf(ft_model *m);
FT_API ft_layer  *ft_model_layer(ft_model *m, int i);
FT_API int        ft_model_layer_swa(const ft_model *m, int i);    /* 1: layer i has a sliding window */
/* the experts the last forward chose in MoE layer i: (n_tokens, n_expert_used) ids, each token's
   in descending router probability; NULL for a dense layer or before any forward */
FT_API const int32_t *ft_model_moe_choices(const ft_model *m, int i, int64_t *n_tokens);
/* Router losses over n layers' router logits (N, E) each, on the tape.
   ft_moe_aux_loss: the load-balancing loss of transformers' load_balancing_loss_func (no attention
     mask): E * sum_e f_e P_e, f_e = the share of the n N top-k choices that went to expert e
     (constant), P_e = the mean router probability of e over the n N tokens. Minimal (1) when
     the load is uniform.
   ft_moe_z_loss: ST-MoE's router z-loss, the mean over the n N tokens of logsumexp(logits)^2.
   ft_model_router_loss: aux_coef * aux + z_coef * z over the MoE layers of the model's last
     forward with gradients on ctx since its last reset (a later forward without gradients, a
     reference model, does not count); NULL with FT_OK status when there is none. *aux, *z
     (optional) their values; load (optional, n_layer x n_expert): each layer's share of that
     forward's choices per expert. */
FT_API ft_tensor *ft_moe_aux_loss(ft_ctx *ctx, ft_tensor *const *logits, int n, int k);
FT_API ft_tensor *ft_moe_z_loss(ft_ctx *ctx, ft_tensor *const *logits, int n);
FT_API ft_tensor *ft_model_router_loss(ft_ctx *ctx, ft_model *m, float aux_coef, float z_coef, float *aux, float *z, float *load);
FT_API ft_tensor *ft_model_tok_embd(ft_model *m);
FT_API ft_tensor *ft_model_output(ft_model *m);
FT_API const ft_tokenizer *ft_model_tokenizer(const ft_model *m);   /* NULL: no vocabulary in the file */
FT_API ft_result  ft_tokenizer_from_gguf(ft_tokenizer **out, const ft_gguf *g);  /* vocabulary only */
FT_API const char *ft_model_chat_template(const ft_model *m);       /* NULL: none                 */
/* bytes of the linear weights (q, k, v, o, gate, up, down of every layer) as stored; *n_weights
   their count (NF4: the packed nibbles, 8-bit codes, second-level scales and offset; about
   0.516 bytes per weight) */
FT_API int64_t    ft_model_linear_bytes(const ft_model *m, int64_t *n_weights);
/* the model's GGUF with its weights as they are now: NF4 weights as an I8 tensor of packed
   nibbles [in/2, out] under the weight's name plus <name>.nf4_absmax (I8), .nf4_absmax2,
   .nf4_offset, .nf4_code (F32) and the key finetune.quantization = "nf4"; every other tensor
   and key copied unchanged. ft_model_load maps such a file back without requantizing. */
FT_API ft_result  ft_model_save_gguf(const ft_model *m, const char *path);
/* on the tape when grad mode is on: logits (B*T, V), or the final normed hidden (B*T, C) */
FT_API ft_tensor *ft_model_forward(ft_ctx *ctx, ft_model *m, const ft_batch *b);
FT_API ft_tensor *ft_model_hidden(ft_ctx *ctx, ft_model *m, const ft_batch *b);
/* the head and the loss of targets (B*T) from final hidden states h (B*T, C), on the tape: the
   mean cross-entropy (per_token 0) or each position's log p(target) (1; 0 where ignored, -100).
   The head's logits are made chunk by chunk (ft_linear_cross_entropy) unless the attached method
   changes the head (LoRA on it, full fine-tuning, methods of your own): then whole. */
FT_API ft_tensor *ft_model_loss(ft_ctx *ctx, ft_model *m, ft_tensor *h, const int32_t *targets, int per_token);
/* generation: a KV cache of n_seq sequences of up to n_ctx tokens */
FT_API ft_result  ft_kv_cache_init(ft_kv_cache **out, const ft_model *m, int64_t n_seq, int64_t n_ctx);
FT_API void       ft_kv_cache_free(ft_kv_cache *c);
FT_API void       ft_kv_cache_clear(ft_kv_cache *c, int64_t seq);          /* seq < 0: all     */
FT_API int64_t    ft_kv_cache_len(const ft_kv_cache *c, int64_t seq);
/* T new tokens for each of B sequences (cache rows row0..row0+B-1), no gradient: logits (B*T, V),
   or (B, V) for the last token of each when last_only */
FT_API ft_tensor *ft_model_decode(ft_ctx *ctx, ft_model *m, ft_kv_cache *kv, int64_t row0,
                                  const int32_t *ids, int64_t B, int64_t T, int last_only);

/* ---- sampling and generation ------------------------------------------------------------------ */
typedef struct ft_sample_opts {
    float temperature;              /* 0: greedy                                                 */
    int   top_k;                    /* 0: no limit                                               */
    float top_p;                    /* 0 or 1: no limit                                          */
} ft_sample_opts;
typedef struct ft_gen_opts {
    int max_new;                    /* tokens to generate per sequence (at least 1)              */
    ft_sample_opts sample;
    const int32_t *stop; int n_stop;   /* ids that end a sequence (kept in the output)           */
} ft_gen_opts;
FT_API int32_t   ft_sample(ft_ctx *ctx, const float *logits, int64_t V, const ft_sample_opts *o, ft_rng *rng);
/* n prompts at once in cache rows 0..n-1: out (n, max_new) ids, out_len (n), optional out_logp
   (n, max_new) = log p(token) at temperature 1. Resets ctx (tape and arena) as it goes. */
FT_API ft_result ft_generate(ft_ctx *ctx, ft_model *m, ft_kv_cache *kv, int64_t n,
                             const int32_t *const *prompts, const int64_t *prompt_len,
                             const ft_gen_opts *o, ft_rng *rng, int32_t *out, int64_t *out_len, float *out_logp);

/* ---- PEFT: parameter-efficient methods ------------------------------------------------------------ */
enum { FT_SITE_Q = 0, FT_SITE_K, FT_SITE_V, FT_SITE_O, FT_SITE_GATE, FT_SITE_UP, FT_SITE_DOWN, FT_SITE_COUNT };
enum { FT_TARGET_Q = 1, FT_TARGET_K = 2, FT_TARGET_V = 4, FT_TARGET_O = 8, FT_TARGET_GATE = 16,
       FT_TARGET_UP = 32, FT_TARGET_DOWN = 64, FT_TARGET_ATTN = 15, FT_TARGET_MLP = 112,
       FT_TARGET_ALL_LINEAR = 127,
       FT_TARGET_EMBED = 128,       /* the token embedding (PEFT's lora_embedding_A/B)               */
       FT_TARGET_HEAD = 256 };      /* the output head (lm_head)                                      */
typedef struct ft_lora_opts {
    int      r;                     /* rank (default 8)                                          */
    float    alpha;                 /* scaling numerator (default r)                             */
    float    dropout;               /* on the LoRA branch input, training only                   */
    unsigned targets;               /* FT_TARGET_* bits (default all linear layers)              */
    int      rslora;                /* scale alpha / sqrt(r) instead of alpha / r                */
    int      dora;                  /* DoRA: learned magnitude per output row                    */
    const uint64_t *layer_mask;     /* optional bit per layer (bit l of word l / 64); read by
                                       ft_lora_attach only (NULL in ft_lora_options afterwards)  */
    uint64_t seed;                  /* init of A                                                  */
    int      reward_head;           /* also a trainable scalar head on the last hidden state (a
                                       reward model, PEFT's SEQ_CLS "score" module)               */
    int      train_router;          /* mixture of experts: train the routers too (copies of them,
                                       in full); otherwise they stay frozen                       */
} ft_lora_opts;
typedef struct ft_peft ft_peft;
FT_API ft_lora_opts ft_lora_opts_default(void);           /* r 8, alpha 8, all linear layers   */
FT_API ft_result  ft_lora_attach(ft_peft **out, ft_model *m, const ft_lora_opts *o);
FT_API void       ft_peft_free(ft_peft *p);                 /* detaches from the model          */
FT_API ft_params *ft_peft_params(ft_peft *p);               /* the trainable parameters          */
FT_API void       ft_peft_set_enabled(ft_peft *p, int on);  /* off: the base (reference) model   */
FT_API int        ft_peft_enabled(const ft_peft *p);
FT_API float      ft_lora_scale(const ft_peft *p);
FT_API const ft_lora_opts *ft_lora_options(const ft_peft *p);
FT_API ft_tensor *ft_lora_A(ft_peft *p, int layer, int which);      /* (r, in) or NULL           */
FT_API ft_tensor *ft_lora_B(ft_peft *p, int layer, int which);      /* (out, r) or NULL          */
FT_API ft_tensor *ft_lora_magnitude(ft_peft *p, int layer, int which);   /* DoRA (out) or NULL   */
FT_API ft_result  ft_peft_merge(ft_peft *p);                /* W + dW into owned f32 weights (LoRA,
                                                              DoRA, LoHa)                        */
FT_API ft_result  ft_peft_unmerge(ft_peft *p);
/* fold the attached method into the model for good and free it: LoRA/DoRA merged into owned f32
   weights, a full fine-tune's weights kept. The model is then the new base (and reference) for
   the next method: SFT, then an RLHF stage on top. */
FT_API ft_result  ft_peft_bake(ft_peft *p);
FT_API const char *ft_site_name(int which);                 /* "q_proj", ... as PEFT names them  */
FT_API ft_tensor *ft_peft_reward_head(ft_peft *p);          /* (1, n_embd) or NULL               */

/* every method through one call: LoRA (and DoRA, rsLoRA) with .lora; the others below */
typedef enum ft_peft_method {
    FT_PEFT_LORA = 0,   /* low-rank updates of the linear layers (QLoRA on a quantized base)          */
    FT_PEFT_ADAPTER,    /* bottleneck adapters: x + up(act(down(x))) on a sublayer's output          */
    FT_PEFT_PREFIX,     /* prefix tuning: learned keys and values in front of every layer's attention */
    FT_PEFT_PROMPT,     /* prompt tuning: learned soft tokens in front of the input                   */
    FT_PEFT_IA3,        /* IA3: learned scaling of k, v and the MLP's inner activations               */
    FT_PEFT_FULL,       /* full fine-tuning: f32 master copies of the weights (a quantized base is
                           dequantized), minus the frozen ones                                       */
    FT_PEFT_LOHA,       /* LoHa: a low-rank Hadamard product as the weight update (.lora's r, alpha,
                           targets, layers)                                                          */
    FT_PEFT_CUSTOM,     /* your own method: ft_peft_attach_custom with an ft_peft_method_def         */
    FT_PEFT_COUNT
} ft_peft_method;
typedef enum ft_adapter_place { FT_ADAPTER_HOULSBY = 0,   /* after attention and after the MLP   */
                                FT_ADAPTER_PFEIFFER       /* after the MLP only                    */
} ft_adapter_place;
typedef enum ft_act { FT_ACT_RELU = 0, FT_ACT_GELU, FT_ACT_SILU, FT_ACT_TANH } ft_act;
typedef enum ft_prompt_init { FT_PROMPT_RANDOM = 0,   /* N(0, 1), PEFT's default                     */
                              FT_PROMPT_VOCAB,        /* embeddings of tokens sampled from the vocab */
                              FT_PROMPT_TEXT          /* embeddings of a text's tokens, repeated      */
} ft_prompt_init;
typedef struct ft_peft_opts {
    ft_peft_method method;
    ft_lora_opts lora;              /* LORA                                                       */
    int      bottleneck;            /* ADAPTER: inner size (64)                                   */
    ft_adapter_place placement;
    ft_act   act;                   /* ADAPTER: nonlinearity (relu)                               */
    int      n_virtual;             /* PREFIX, PROMPT: virtual tokens (20)                        */
    int      prefix_hidden;         /* PREFIX: reparameterisation MLP hidden size (0: none)       */
    ft_prompt_init prompt_init;     /* PROMPT                                                     */
    const char *prompt_text;        /* PROMPT with FT_PROMPT_TEXT                                 */
    unsigned ia3_targets;           /* IA3: FT_TARGET_* (default k, v, down as PEFT for llama)    */
    const char *freeze;             /* FULL: comma-separated name patterns kept frozen, '*' any
                                       run of characters, e.g. "token_embd.*,blk.0.*"            */
    const uint64_t *layer_mask;     /* ADAPTER, IA3, FULL: only these layers (bit l of word l/64) */
    uint64_t seed;
    int      reward_head;           /* plus a scalar reward head (any method)                     */
} ft_peft_opts;
/* the method's defaults: LoRA's, bottleneck 64 (relu, Houlsby), 20 virtual tokens, IA3 on k, v, down */
FT_API ft_peft_opts ft_peft_opts_default(ft_peft_method method);
FT_API ft_result ft_peft_attach(ft_peft **out, ft_model *m, const ft_peft_opts *o);
/* Your own method through the same interface the built-in ones implement: add its parameters to
   P (ft_params_add; names are yours), give them their first values, and the hooks the forward
   consults (NULL: not used): linear (every linear layer: layer, which = FT_SITE_*; layer < 0 is the
   output head; return x W^T + bias with your change) and after (a sublayer's output y before the
   residual add: place 0 attention, 1 MLP). user is passed to every hook. It trains, switches off,
   checkpoints and saves in finetune.h's own GGUF like the others; to load that file, attach the
   method again and read its values with ft_peft_read. */
typedef struct ft_peft_method_def {
    const char *name;
    ft_result (*add)(ft_peft *p, ft_params *P, void *user);
    ft_result (*init)(ft_peft *p, ft_rng *rng, void *user);
    ft_tensor *(*linear)(ft_ctx *ctx, ft_peft *p, ft_tensor *x, ft_tensor *W, ft_tensor *bias, int layer, int which, void *user);
    ft_tensor *(*after)(ft_ctx *ctx, ft_peft *p, int layer, int place, ft_tensor *y, void *user);
    void *user;
} ft_peft_method_def;
FT_API ft_result ft_peft_attach_custom(ft_peft **out, ft_model *m, const ft_peft_method_def *def, uint64_t seed);
FT_API ft_model *ft_peft_model(ft_peft *p);                 /* the model it is attached to        */
/* the values of an attached adapter from finetune.h's own GGUF (every parameter by name) */
FT_API ft_result ft_peft_read(ft_peft *p, const char *path);
FT_API ft_peft_method ft_peft_kind(const ft_peft *p);
FT_API const char *ft_peft_method_name(ft_peft_method k);    /* "lora", "adapter", ...            */
FT_API int64_t    ft_peft_virtual_tokens(const ft_peft *p);  /* PREFIX / PROMPT: P, else 0        */

/* ---- data: strict JSON / JSONL ---------------------------------------------------------------------- */
typedef enum ft_json_kind { FT_JSON_NULL, FT_JSON_BOOL, FT_JSON_NUMBER, FT_JSON_STRING, FT_JSON_ARRAY, FT_JSON_OBJECT } ft_json_kind;
typedef struct ft_json {
    ft_json_kind kind;
    double num;                     /* numbers; booleans as 0/1                                */
    const char *s; int64_t len;     /* strings: decoded UTF-8, NUL-terminated; len in bytes    */
    int64_t n;                      /* arrays / objects: children                               */
    struct ft_json *kid;            /* arrays: n values; objects: n (key, value) pairs = 2n    */
} ft_json;
typedef struct ft_json_doc ft_json_doc;
typedef struct ft_jsonl ft_jsonl;
FT_API ft_result ft_json_parse(ft_json_doc **out, const char *text, size_t len, const char *file, int64_t line);
FT_API void      ft_json_free(ft_json_doc *d);
FT_API const ft_json *ft_json_root(const ft_json_doc *d);
FT_API const ft_json *ft_json_get(const ft_json *obj, const char *key);     /* NULL if absent    */
FT_API const ft_json *ft_json_at(const ft_json *arr, int64_t i);
FT_API const ft_json *ft_json_key_at(const ft_json *obj, int64_t i);
FT_API const ft_json *ft_json_value_at(const ft_json *obj, int64_t i);
FT_API int       ft_utf8_len(const unsigned char *p, const unsigned char *end);  /* 0: invalid  */
FT_API ft_result ft_jsonl_open(ft_jsonl **out, const char *path);
FT_API ft_result ft_jsonl_next(ft_jsonl *f, ft_json_doc **doc);            /* *doc NULL at end  */
FT_API int64_t   ft_jsonl_line(const ft_jsonl *f);
FT_API const char *ft_jsonl_path(const ft_jsonl *f);
FT_API void      ft_jsonl_close(ft_jsonl *f);

/* ---- datasets: JSONL -> token ids with a loss mask --------------------------------------------------- */
typedef enum ft_data_format {
    FT_DATA_AUTO = 0,               /* from the first line's keys                                  */
    FT_DATA_TEXT,                   /* {"text"}: continued pretraining                             */
    FT_DATA_INSTRUCT,               /* {"instruction", "input", "output"}                          */
    FT_DATA_CHAT,                   /* {"messages": [{"role", "content"}]}                         */
    FT_DATA_PREFERENCE,             /* {"prompt", "chosen", "rejected"}                            */
    FT_DATA_KTO,                    /* {"prompt", "completion", "label"}                           */
    FT_DATA_PROMPT                  /* {"prompt", "answer"}                                        */
} ft_data_format;
typedef struct ft_data_opts {
    ft_data_format format;
    int64_t max_len;                /* tokens per example (0: no limit); longer ones are cut       */
    int     skip_long;              /* ... or skipped as bad lines                                 */
    int     train_on_prompt;        /* loss on prompt tokens too (instruction and chat data)       */
    int     skip_bad;               /* skip malformed lines (each reported to log) instead of failing */
    const char *system;             /* a system message for instruction data                       */
    ft_log_fn log; void *log_user;
} ft_data_opts;
typedef struct ft_example {
    int32_t *ids; unsigned char *loss; int64_t n;     /* tokens; loss[t]: ids[t] is a target      */
    int32_t *ids2; unsigned char *loss2; int64_t n2;  /* preference data: the rejected sequence   */
    int64_t prompt_len;             /* preference / kto / prompt data: tokens of the prompt        */
    int     label;                  /* kto: 1 desirable                                            */
    char   *answer;                 /* prompt data: the reference answer, or NULL                  */
} ft_example;
typedef struct ft_dataset ft_dataset;
FT_API ft_result ft_dataset_load(ft_dataset **out, const char *path, const ft_tokenizer *tok,
                                 const char *chat_template, const ft_data_opts *o);
FT_API void      ft_dataset_free(ft_dataset *d);
/* a dataset of token ids made by the caller: ft_dataset_new, then ft_dataset_add copies each
   example in (ids and n are needed; loss NULL: every token of the sequence is a target) */
FT_API ft_result ft_dataset_new(ft_dataset **out, ft_data_format format);
FT_API ft_result ft_dataset_add(ft_dataset *d, const ft_example *e);
FT_API int64_t   ft_dataset_size(const ft_dataset *d);
FT_API const ft_example *ft_dataset_get(const ft_dataset *d, int64_t i);
FT_API ft_data_format ft_dataset_format(const ft_dataset *d);
FT_API const char *ft_data_format_name(ft_data_format f);
FT_API int64_t   ft_dataset_skipped(const ft_dataset *d);
FT_API int64_t   ft_dataset_truncated(const ft_dataset *d);
/* examples (pairs: either side) with no target token left within seq_len tokens (0 for prompts) */
FT_API int64_t   ft_dataset_without_targets(const ft_dataset *d, int64_t seq_len);
FT_API int64_t   ft_dataset_tokens(const ft_dataset *d);
FT_API ft_result ft_dataset_split(ft_dataset *d, double frac, uint64_t seed, ft_dataset **eval);   /* held-out part */
FT_API ft_result ft_dataset_mix(ft_dataset **out, ft_dataset *const *parts, const double *ratios, int n_parts,
                                int64_t n_total, uint64_t seed);                 /* e.g. 10% general replay */
FT_API ft_result ft_mix_ratios(const int64_t *sizes, int n, double temperature, double cap, double *out);
                                /* FLAN / T5 temperature sampling: out[i] ~ min(n_i, cap)^(1/T), sums to 1 */

/* ---- optimizers ------------------------------------------------------------------------------------ */
typedef enum ft_optim_kind { FT_OPTIM_ADAMW = 0, FT_OPTIM_SGD = 1 } ft_optim_kind;
typedef struct ft_optim_opts {
    ft_optim_kind kind;             /* the rate is ft_optim_step's argument                       */
    float beta1, beta2, eps;        /* AdamW: 0.9, 0.999, 1e-8                                   */
    float weight_decay;             /* decoupled (AdamW), L2 (SGD)                               */
    float momentum;                 /* SGD                                                       */
} ft_optim_opts;
typedef struct ft_optim ft_optim;
FT_API ft_optim_opts ft_optim_opts_default(void);          /* AdamW, its defaults              */
FT_API ft_result ft_optim_init(ft_optim **out, ft_params *P, const ft_optim_opts *o);   /* NULL: defaults */
FT_API void      ft_optim_free(ft_optim *o);
FT_API ft_result ft_optim_step(ft_optim *o, float lr);      /* FT_ERR_NUMERIC: nothing changed   */
FT_API void      ft_optim_set_lr_scale(ft_optim *o, const ft_tensor *t, float scale);   /* LoRA+ */
FT_API int64_t   ft_optim_steps(const ft_optim *o);
FT_API double    ft_params_grad_norm(const ft_params *P);
FT_API void      ft_params_scale_grad(ft_params *P, float k);

/* ---- losses over log-probabilities (TRL's definitions; the objective table below uses them) ------- */
typedef struct ft_pref_stats {      /* as TRL logs them: rewards/chosen, rewards/rejected, ...     */
    double rewards_chosen, rewards_rejected, rewards_margins, rewards_accuracies;
    double logps_chosen, logps_rejected, log_odds_ratio, log_odds_chosen;
    double kl;                      /* KTO: the batch's detached KL reference point              */
} ft_pref_stats;
/* what a pairwise loss sees: (B) tensors of chosen and rejected log-probabilities */
typedef struct ft_pair_logps {
    ft_tensor *chosen, *rejected;           /* the policy's, on the tape: summed over the completion,
                                               or its per-token mean for a length-averaged loss  */
    ft_tensor *ref_chosen, *ref_rejected;   /* the reference's (the adapter off), the same way; NULL
                                               for a loss without a reference                    */
    ft_tensor *nll;                         /* (1): the policy's mean NLL of the chosen tokens    */
    const int64_t *len_chosen, *len_rejected;   /* completion tokens of each (B)                 */
} ft_pair_logps;
typedef struct ft_train_opts ft_train_opts;
/* a pairwise loss: the mean loss (1) on the tape; fills the metrics TRL logs */
typedef ft_tensor *(*ft_pair_loss_fn)(ft_ctx *ctx, const ft_pair_logps *lp, const ft_train_opts *o, ft_pref_stats *st);
FT_API ft_tensor *ft_rm_loss(ft_ctx *ctx, ft_tensor *rc, ft_tensor *rr, const float *margin, float center_coef, ft_pref_stats *st);
/* KTO on unpaired feedback: lp, rp policy / reference log-probs (B) of each completion, desirable[i]
   its label; klp, krp the same for mismatched prompt/completion pairs (the KL reference point;
   NULL: 0). Weights: desirable_weight, undesirable_weight (TRL defaults 1, 1). */
FT_API ft_tensor *ft_kto_loss(ft_ctx *ctx, ft_tensor *lp, ft_tensor *rp, ft_tensor *klp, ft_tensor *krp, const int *desirable,
                              float beta, float desirable_weight, float undesirable_weight, ft_pref_stats *st);

/* ---- reinforcement learning: GRPO and PPO on per-token log-probs (TRL's definitions) ------------ */
typedef struct ft_rl_stats {        /* as TRL logs them                                            */
    double reward, reward_std, frac_reward_zero_std;                /* GRPO rollouts             */
    double kl, clip_low, clip_high, clip_region, clip_low_min, clip_high_max;   /* GRPO loss     */
    double pg_loss, vf_loss, pg_clipfrac, vf_clipfrac, approxkl, ratio_mean;    /* PPO loss      */
    double entropy, non_score_reward, rlhf_reward, scores;          /* PPO objective/ metrics    */
    double completion_len;
} ft_rl_stats;
typedef enum ft_adv_scale { FT_ADV_GROUP = 0, FT_ADV_BATCH, FT_ADV_NONE } ft_adv_scale;
/* GRPO advantages of n_prompts groups of G rewards: (r - group mean) / (std + 1e-4), the std
   (Bessel) of the group, of the whole batch, or none */
FT_API void ft_grpo_advantages(const float *rewards, int64_t n_prompts, int64_t G, ft_adv_scale scale, float *adv, ft_rl_stats *st);
typedef enum ft_grpo_agg { FT_GRPO_AGG_GRPO = 0,  /* mean over sequences of the token mean     */
                           FT_GRPO_AGG_BNPO,      /* token mean over the batch                 */
                           FT_GRPO_AGG_DR_GRPO,   /* sum / (B * max_completion_len)            */
                           FT_GRPO_AGG_DAPO       /* sum / tokens of the whole generation batch */
} ft_grpo_agg;
typedef struct ft_grpo_opts {
    float beta;                     /* KL to the reference, k3 estimator (0: none)               */
    float epsilon, epsilon_high;    /* ratio clipped to [1 - epsilon, 1 + epsilon_high] (0.2)   */
    ft_grpo_agg agg;
    int64_t max_completion_len;     /* dr_grpo                                                    */
    int64_t num_items;              /* dapo: completion tokens of the generation batch           */
} ft_grpo_opts;
/* lp (B, T) per-token log-probs of the sampled tokens on the tape; old, ref (B*T) or NULL (old:
   lp itself, detached); adv (B); mask (B*T) 1 on completion tokens */
FT_API ft_tensor *ft_grpo_loss(ft_ctx *ctx, ft_tensor *lp, const float *old, const float *ref, const float *adv,
                               const float *mask, const ft_grpo_opts *o, ft_rl_stats *st);
typedef struct ft_ppo_opts {
    float kl_coef;                  /* per-token KL penalty in the reward (0.05)                  */
    int   kl_k3;                    /* k3 estimator instead of k1                                 */
    int   whiten_rewards;
    float gamma, lam;               /* GAE (1, 0.95)                                              */
    float cliprange, cliprange_value, vf_coef;   /* 0.2, 0.2, 0.1                                 */
    float kl_target, kl_horizon;    /* adaptive kl_coef (Ziegler et al. 2019) when kl_target > 0  */
} ft_ppo_opts;
/* the adaptive KL controller: kl_coef *= 1 + clip(kl / target - 1, -0.2, 0.2) * n / horizon,
   after a batch of n rollouts whose KL (summed over tokens, averaged over rollouts) was kl */
FT_API float      ft_ppo_adapt_kl(float kl_coef, double kl, int64_t n, float target, float horizon);
/* One batch of B responses of T tokens as TRL's PPO (v1.9) prepares it. In: seqlen (B) the index
   of each response's last token; logprobs, ref, values (B*T) of the rollout (overwritten with
   TRL's padding fills), scores (B). Out (B*T): kl, rewards, advantages (whitened), returns,
   pad / pad_p1 masks (t > seqlen, t > seqlen + 1). */
typedef struct ft_ppo_batch {
    int64_t B, T; const int64_t *seqlen;
    float *logprobs, *ref, *values; const float *scores;
    float *kl, *rewards, *advantages, *returns; unsigned char *pad, *pad_p1;
} ft_ppo_batch;
FT_API void       ft_ppo_prepare(ft_ppo_batch *b, const ft_ppo_opts *o, ft_rl_stats *st);
/* new_lp, vpred (B, T) on the tape: clipped policy loss + vf_coef * clipped value loss */
FT_API ft_tensor *ft_ppo_loss(ft_ctx *ctx, ft_tensor *new_lp, ft_tensor *vpred, const ft_ppo_batch *b, const ft_ppo_opts *o, ft_rl_stats *st);

/* ---- rollouts and rewards (GRPO, PPO) --------------------------------------------------------------- */
typedef struct ft_rollout {         /* what a reward function sees                                  */
    const int32_t *prompt; int64_t prompt_len;  /* prompt token ids (chat template applied)     */
    const int32_t *ids; int64_t len;            /* the sampled completion (stop token included) */
    const char *text;               /* the completion as text, special tokens dropped            */
    const char *answer;             /* the example's "answer", or NULL                          */
} ft_rollout;
typedef float (*ft_reward_fn)(void *user, const ft_rollout *r);
typedef struct ft_reward_term { ft_reward_fn fn; void *user; float weight; } ft_reward_term;
/* verifiable rewards: 1 when the last number in the text equals the answer's (numerically);
   1 when the text matches the regular expression `user` (a const char *: . [] [^] \d \w \s
   ( | ) * + ? {m,n} ^ $, searched anywhere unless anchored); minus the characters beyond
   *(int *)user, divided by it (a length penalty, 0 when within) */
FT_API float ft_reward_number(void *user, const ft_rollout *r);
FT_API float ft_reward_regex(void *user, const ft_rollout *r);
FT_API float ft_reward_length(void *user, const ft_rollout *r);
FT_API int   ft_regex_search(const char *pattern, const char *text);   /* 1 match, 0 none, < 0 bad pattern */
/* a reward model as a reward: user is an ft_rm_scorer (a model with a reward head attached and a
   context of its own); the score of prompt + completion */
typedef struct ft_rm_scorer { ft_model *model; ft_ctx *ctx; } ft_rm_scorer;
FT_API float ft_reward_model(void *user, const ft_rollout *r);

/* GRPO and PPO: how micro-batches of rollouts are made (ft_train_opts.rl). The policy is the
   model with its adapter on, the reference the same model with it off. */
typedef struct ft_rl_opts {
    int64_t prompts;                /* prompts per micro-batch (4)                                */
    int64_t group;                  /* GRPO: completions per prompt (4); PPO: 1                   */
    int     max_new;                /* completion length (64)                                     */
    ft_sample_opts sample;          /* temperature (1), top-p                                     */
    int     iterations;             /* optimizer steps on one rollout batch: GRPO's num_iterations
                                       (1), PPO's epochs (4); checkpoints fall between batches   */
    ft_grpo_opts grpo; ft_adv_scale scale;
    ft_ppo_opts ppo;                /* PPO's value head: the adapter's scalar head (reward_head) */
    const ft_reward_term *rewards; int n_rewards;  /* reward = sum of weight * fn               */
} ft_rl_opts;
/* greedy completions of every prompt scored by the reward terms: mean reward, and the fraction
   of completions with the full reward (>= max_reward) */
FT_API ft_result ft_eval_rl(ft_ctx *ctx, ft_model *m, const ft_dataset *prompts, int max_new, const ft_reward_term *rewards, int n_rewards,
                            float max_reward, int64_t limit, double *mean_reward, double *solved);

/* ---- training utilities: schedules, checkpoints, plots ------------------------------------------------ */
typedef enum ft_sched_kind { FT_SCHED_COSINE = 0, FT_SCHED_LINEAR, FT_SCHED_CONSTANT } ft_sched_kind;
FT_API float ft_lr_at(ft_sched_kind kind, float lr, int64_t step, int64_t warmup, int64_t total, float min_ratio);
typedef struct ft_train_state {
    int64_t  step;                  /* optimizer steps done                                       */
    int64_t  epoch, data_pos;       /* where the data order is                                    */
    uint64_t data_seed;             /* seed of the data order                                     */
    double   tokens;                /* tokens trained on                                          */
    double   obj[4];                /* the objective's running state (PPO: its KL coefficient)    */
} ft_train_state;
/* every parameter, both moments, the RNG and the state; atomic (temporary file, fsync, rename) */
FT_API ft_result ft_checkpoint_save(const char *path, const ft_params *P, const ft_optim *o, const ft_rng *rng, const ft_train_state *st);
FT_API ft_result ft_checkpoint_load(const char *path, ft_params *P, ft_optim *o, ft_rng *rng, ft_train_state *st);
typedef struct ft_plot_series { const char *name; const double *x, *y; int64_t n; } ft_plot_series;
FT_API ft_result ft_svg_plot(const char *path, const char *title, const char *xlabel, const char *ylabel,
                             const ft_plot_series *s, int n_series);

/* ---- batches and sequence log-probs, evaluation -------------------------------------------------------- */
typedef struct ft_batch_data {
    int32_t *ids, *targets, *pos, *seg;     /* (B*T) each; targets -100 where there is no loss      */
    int64_t B, T, cap;
    int64_t n_targets, n_tokens, used;      /* targets, real tokens, examples consumed               */
    int32_t *len, *label;                   /* (B) each: real tokens of a row; KTO: 1 desirable      */
    int64_t row_cap;
} ft_batch_data;
FT_API ft_result ft_batch_build(ft_batch_data *bd, const ft_dataset *d, const int64_t *order, int64_t n_order,
                                int64_t B, int64_t T, int pack, int32_t pad_id);
FT_API void      ft_batch_data_free(ft_batch_data *bd);
/* preference pairs: rows 0..B-1 the chosen sequences, B..2B-1 the rejected ones */
FT_API ft_result ft_batch_build_pairs(ft_batch_data *bd, const ft_dataset *d, const int64_t *order, int64_t B, int64_t T, int32_t pad_id);
/* KTO: rows 0..B-1 prompt i + completion i, rows B..2B-1 prompt i + completion i-1 (mod B), the
   mismatched pairs of the KL reference point; T: the most tokens of a row (the batch takes the
   longest row up to T) */
FT_API ft_result ft_batch_build_kto(ft_batch_data *bd, const ft_dataset *d, const int64_t *order, int64_t B, int64_t T, int32_t pad_id);
/* sum and mean log-prob of each row's target tokens (on the tape): what DPO & co. compare */
FT_API ft_result ft_sequence_logps(ft_ctx *ctx, ft_model *m, const ft_batch_data *bd, int packed,
                                   ft_tensor **sum, ft_tensor **mean, int64_t *counts);
typedef struct ft_step_info {
    int64_t step, steps, epoch;
    double loss, lr, grad_norm, tokens, tokens_per_s, elapsed_s, eta_s;
    double eval_loss;               /* NaN when not evaluated at this step                        */
    ft_pref_stats pref;             /* preference objectives: rewards/chosen, ... (last micro-batch) */
    ft_rl_stats rl;                 /* GRPO, PPO: reward, its spread, KL, clip fractions, ...     */
    double moe_aux, moe_z;          /* mixture of experts: the router losses (last micro-batch)   */
    const float *moe_load;          /* (n_layer, n_expert) each layer's share of the choices per
                                       expert (last micro-batch), or NULL for a dense model        */
    int64_t moe_layers, moe_experts;
} ft_step_info;
typedef int (*ft_step_fn)(void *user, const ft_step_info *info);     /* non-zero: stop           */

/* ---- objectives: one row each, one training loop for all of them ------------------------------------
   A row says how a micro-batch is made (its kind and the examples it reads), whether it needs the
   reference policy, its defaults and its loss; ft_train does the rest (schedule, accumulation,
   clipping, the NaN guard, the optimizer, evaluation, callbacks, checkpoints, resume). */
typedef enum ft_objective {
    FT_OBJ_SFT = 0,                 /* cross-entropy on the answer tokens (instruction, chat)      */
    FT_OBJ_CPT,                     /* cross-entropy on every token of plain text, packed rows    */
    FT_OBJ_DPO,                     /* DPO and its loss_type family in TRL 1.16 (the same pairs,
                                       the reference, another loss):                              */
    FT_OBJ_IPO, FT_OBJ_HINGE, FT_OBJ_ROBUST, FT_OBJ_EXO_PAIR, FT_OBJ_NCA_PAIR, FT_OBJ_BCO_PAIR,
    FT_OBJ_SPPO_HARD, FT_OBJ_AOT, FT_OBJ_AOT_UNPAIRED, FT_OBJ_APO_ZERO, FT_OBJ_APO_DOWN,
    FT_OBJ_DISCOPOP, FT_OBJ_SIGMOID_NORM,
    FT_OBJ_SIMPO, FT_OBJ_ORPO,      /* reference-free pairs                                        */
    FT_OBJ_KTO,                     /* unpaired good / bad completions                             */
    FT_OBJ_RM,                      /* a reward model: Bradley-Terry on a scalar head             */
    FT_OBJ_GRPO, FT_OBJ_PPO,        /* reinforcement learning from sampled completions           */
    FT_OBJ_COUNT
} ft_objective;
typedef enum ft_objective_kind {    /* how a micro-batch is made                                  */
    FT_KIND_TOKENS = 0,             /* rows of examples, next-token cross-entropy                 */
    FT_KIND_PAIRS,                  /* chosen and rejected rows; their log-probs -> pair_loss     */
    FT_KIND_KTO,                    /* completions and mismatched ones (the KL point) -> KTO      */
    FT_KIND_SCORES,                 /* chosen and rejected rows; the reward head's scores -> RM   */
    FT_KIND_ROLLOUTS                /* prompts, sampled completions, rewards -> GRPO / PPO        */
} ft_objective_kind;
typedef struct ft_objective_def {
    const char *name;               /* what --objective takes and the run's config records        */
    ft_objective_kind kind;
    ft_data_format data;            /* the examples it reads (FT_DATA_AUTO: instruction or chat)  */
    int   reference;                /* needs the reference policy (the model with its adapter off) */
    int   averaged;                 /* pairs: the per-token mean log-prob instead of the sum       */
    float lr, beta, gamma, label_smoothing;   /* its defaults (0 where it has none)              */
    ft_pair_loss_fn pair_loss;      /* FT_KIND_PAIRS: the loss; your own row may bring its own    */
    const char *metrics;            /* what it logs to metrics.jsonl (TRL's names)                */
    const char *about;              /* one line for usage texts                                   */
    int   scalar_head;              /* the adapter carries a scalar head (ft_peft_opts.reward_head):
                                       rm's reward, PPO's value                                   */
} ft_objective_def;
FT_API const ft_objective_def *ft_objective_get(ft_objective id);       /* NULL out of range     */
FT_API int         ft_objective_parse(const char *name, ft_objective *out);  /* 1: known name      */
FT_API const char *ft_objective_name(ft_objective id);

struct ft_train_opts {
    ft_objective objective;
    const ft_objective_def *custom; /* your own row instead of the table's (e.g. a new pair loss) */
    float   beta, gamma, label_smoothing;   /* the objective's (ft_objective_def's defaults)      */
    float   tau;                    /* discopop: the modulation temperature (0.05)                */
    float   desirable_weight, undesirable_weight;   /* KTO (1, 1)                                 */
    float   rm_center;              /* reward model: center_rewards_coefficient (0: off)          */
    int64_t steps;                  /* optimizer steps (0: epochs over the data)                  */
    int     epochs;
    int64_t batch, seq_len;         /* examples per micro-batch (4), tokens per example (512)     */
    int     grad_accum;             /* micro-batches per step (1)                                 */
    int     pack;                   /* pack examples into rows of seq_len (cpt: on)               */
    float   lr;                     /* peak learning rate (the objective's default)               */
    ft_sched_kind sched; int64_t warmup; float min_lr_ratio;
    ft_optim_opts optim;
    float   max_grad_norm;          /* 1 (0: no clipping)                                         */
    float   lr_scale_b;             /* LoRA+: rate multiplier of the B matrices (0: 1)            */
    uint64_t seed;                  /* data order; RL: sampling too (1)                            */
    int     skip_nonfinite;         /* skip a step with a NaN/inf loss or gradient (else stop)    */
    ft_rl_opts rl;                  /* GRPO, PPO                                                   */
    const ft_dataset *eval; int64_t eval_every;
    const char *checkpoint_path; int64_t save_every; const char *resume_from;
    ft_step_fn on_step; void *user;
    int     from_default;           /* set by ft_train_opts_default: then a zero gamma, label
                                       smoothing or kl_coef is taken as zero, not as the default  */
    float   router_aux_coef;        /* MoE: load-balancing loss weight; < 0: the architecture's
                                       (0.001 mixtral, qwen3moe; 0.01 olmoe), 0: off             */
    float   router_z_coef;          /* MoE: router z-loss weight (0: off)                          */
};
/* every option at its default for the objective: what a zero field means, written once; the
   library and the command line both start from it */
FT_API ft_train_opts ft_train_opts_default(ft_objective objective);
/* the examples: instruction / chat / text data, preference pairs, KTO's labelled completions or
   prompts ({"prompt", "answer"}), as the objective's row says */
FT_API ft_result ft_train(ft_ctx *ctx, ft_model *m, ft_params *P, const ft_dataset *train, const ft_train_opts *o, ft_train_state *state);
FT_API ft_result ft_eval_loss(ft_ctx *ctx, ft_model *m, const ft_dataset *d, int64_t batch, int64_t seq_len, double *mean_loss, int64_t *n_tokens);
FT_API ft_result ft_eval_preference(ft_ctx *ctx, ft_model *m, const ft_dataset *d, int64_t batch, int64_t seq_len, float beta,
                                    int implicit, double *accuracy, double *margin);
/* reward model: the score head on the hidden state of each row's last real token (B), on the tape */
FT_API ft_result ft_sequence_rewards(ft_ctx *ctx, ft_model *m, const ft_batch_data *bd, ft_tensor **rewards);
/* held-out pairwise accuracy of a reward model (chosen scores higher) and the mean margin */
FT_API ft_result ft_eval_reward(ft_ctx *ctx, ft_model *m, const ft_dataset *d, int64_t batch, int64_t seq_len,
                                double *accuracy, double *margin);
typedef struct ft_eval_gen { int64_t n, exact, contains; double exact_rate, contains_rate; } ft_eval_gen;
typedef void (*ft_eval_gen_fn)(void *user, int64_t i, const char *generated, const char *reference);
/* greedy generation on each example's prompt vs its reference answer (limit 0: all) */
FT_API ft_result ft_eval_generate(ft_ctx *ctx, ft_model *m, const ft_dataset *d, int max_new, int64_t limit,
                                  ft_eval_gen *res, ft_eval_gen_fn on_item, void *user);
/* multiple-choice evaluation scored as lm-evaluation-harness scores it: JSONL items
   {"context", "choices": [...], "gold"} (or ARC's {"question", "choices": {"text", "label"},
   "answerKey"}, PIQA's {"goal", "sol1", "sol2", "label"}); each choice's summed log-probability
   after the context (ft_mc_item gives them after ft_eval_mc), acc and acc_norm (per character) */
typedef struct ft_mc_set ft_mc_set;
typedef struct ft_eval_mc_result { int64_t n; double acc, acc_norm; } ft_eval_mc_result;
FT_API ft_result ft_mc_load(ft_mc_set **out, const char *path);
FT_API void      ft_mc_free(ft_mc_set *s);
FT_API int64_t   ft_mc_size(const ft_mc_set *s);
FT_API const double *ft_mc_item(const ft_mc_set *s, int64_t i, int *n_choices, int *gold);
FT_API ft_result ft_eval_mc(ft_ctx *ctx, ft_model *m, ft_mc_set *s, int64_t seq_len, ft_eval_mc_result *res);

/* ---- export: safetensors and adapter files ------------------------------------------------------------ */
typedef struct ft_safetensors ft_safetensors;
FT_API ft_result ft_safetensors_open(ft_safetensors **out, const char *path);     /* bounds-checked */
FT_API ft_result ft_safetensors_open_memory(ft_safetensors **out, const void *data, size_t size, const char *name);  /* copies data */
FT_API void      ft_safetensors_close(ft_safetensors *s);
FT_API int64_t   ft_safetensors_count(const ft_safetensors *s);
FT_API const char *ft_safetensors_name(const ft_safetensors *s, int64_t i);
FT_API const void *ft_safetensors_get(const ft_safetensors *s, const char *name, const char **dtype, int64_t *shape, int *ndim);

/* ---- adapter files: one save, one load; which format can hold which adapter is decided here ----
   FT_FORMAT_LLAMACPP  llama.cpp's LoRA GGUF (llama-cli --lora FILE): LoRA / rsLoRA on the linear
                       layers (no DoRA, no LoRA on the embedding or head, no reward head)
   FT_FORMAT_PEFT      a PEFT directory (adapter_model.safetensors + adapter_config.json, PEFT 0.21,
                       task_type CAUSAL_LM): LoRA / DoRA, IA3 (`...k_proj.ia3_l` [out, 1],
                       `...down_proj.ia3_l` [1, in]), prompt tuning (`prompt_embeddings` [P, n_embd])
                       and prefix tuning (`prompt_embeddings` [P, n_layer * 2 * kv_dim], the MLP's
                       output when it has one); what lives in k's output space in Hugging Face's
                       order. No bottleneck adapters, full fine-tuning or reward heads.
   FT_FORMAT_FINETUNE  finetune.h's own GGUF ("adapter.type" = "finetune"): every method, the head
   FT_FORMAT_AUTO      saving: llama.cpp's where it can hold the adapter, else finetune.h's own */
typedef enum ft_adapter_format { FT_FORMAT_AUTO = 0, FT_FORMAT_LLAMACPP, FT_FORMAT_PEFT, FT_FORMAT_FINETUNE } ft_adapter_format;
/* FT_OK when `format` can hold the adapter, else FT_ERR_UNSUPPORTED saying why */
FT_API ft_result ft_peft_can_save(const ft_peft *p, ft_adapter_format format);
/* base_model_name: PEFT's base_model_name_or_path (NULL: the GGUF's general.name) */
FT_API ft_result ft_peft_save(ft_peft *p, const char *path, ft_adapter_format format, const char *base_model_name);
/* attach the adapter at `path`: a PEFT directory, llama.cpp's LoRA GGUF or finetune.h's own; its
   method, rank, alpha, sites and layers come from the file */
FT_API ft_result ft_peft_load(ft_peft **out, ft_model *m, const char *path);
/* A complete model GGUF with the attached adapter merged into the linear weights (W + sBA; DoRA:
   m / ||W + sBA|| per row): every metadata key and every other tensor (embeddings, norms, head)
   copied unchanged, general.file_type set to the new type. Without an adapter (or with it
   switched off) it just re-types the base, e.g. a Q4_1 model dequantized to F32. Atomic. */
typedef struct ft_save_opts {
    ft_type type;                   /* every layer's q,k,v,o,gate,up,down weight as: F32 (0), F16,
                                       BF16, Q8_0, Q4_0 or Q4_1 (ggml's own rounding); rows that
                                       are not a multiple of 32 fall back to F16, as llama-quantize */
    int     keep_type;              /* instead: each merged weight in its base type (one of those);
                                       weights without an adapter keep their bytes                 */
    int     embeddings;             /* also token_embd / output as `type` (default: unchanged), e.g.
                                       an all-F32 file for an exact comparison with llama.cpp      */
} ft_save_opts;
FT_API ft_save_opts ft_save_opts_default(void);          /* F16 linear weights, the rest as stored */
FT_API int ft_save_type_ok(ft_type t);                    /* 1: merged weights can be written as t */
FT_API ft_result ft_model_save_merged(ft_model *m, const char *path, const ft_save_opts *o);   /* NULL: F32 */

/* ---- synthetic data: Self-Instruct and Evol-Instruct with the model as generator ------------------ */
typedef enum ft_synth_method { FT_SYNTH_SELF_INSTRUCT = 0, FT_SYNTH_EVOL_INSTRUCT } ft_synth_method;
typedef enum ft_synth_reason {      /* why a generated example was not kept                       */
    FT_SYNTH_KEPT = 0,
    FT_SYNTH_FORMAT,                /* no ASCII letter, or starts with punctuation / non-ASCII   */
    FT_SYNTH_TOO_SHORT,             /* fewer than min_words words                                */
    FT_SYNTH_TOO_LONG,              /* more than max_words words                                 */
    FT_SYNTH_KEYWORD,               /* a blacklisted word ("image", "graph", ...): a text model
                                       cannot do it                                              */
    FT_SYNTH_COPIED,                /* evol: the rewriting prompt's own words ("rewritten task") */
    FT_SYNTH_NO_NEW_INFO,           /* evol: ROUGE-L with the original >= evol_rouge             */
    FT_SYNTH_DUPLICATE,             /* the same words as an instruction of the pool              */
    FT_SYNTH_SIMILAR,               /* ROUGE-L with an instruction of the pool >= rouge          */
    FT_SYNTH_BAD_ANSWER,            /* the answer is empty, has no letter or digit, is shorter
                                       than min_answer_words, says "sorry" in < 80 words, or only
                                       repeats the instruction (the same words)                   */
    FT_SYNTH_REASON_COUNT
} ft_synth_reason;
typedef struct ft_synth_opts {
    ft_synth_method method;
    int64_t  n;                     /* examples wanted in the output file, counting those already
                                       there (resume)                                            */
    int      batch;                 /* prompts per ft_generate call (default 4)                   */
    int      max_new;               /* tokens for a proposed / evolved instruction (default 64)   */
    int      max_new_answer;        /* tokens for an answer (default 160)                         */
    ft_sample_opts sample;          /* zero: greedy (ft synth: temperature 0.7, top-p 0.9)       */
    uint64_t seed;                  /* few-shot picks, evolution operations, sampling             */
    float    rouge;                 /* reject at ROUGE-L >= this against the pool (default 0.7)  */
    float    evol_rouge;            /* evol: reject at ROUGE-L >= this against the original
                                       (default 0.9)                                             */
    int      min_words, max_words;  /* instruction length in words (defaults 3, 150)             */
    int      min_answer_words;      /* default 1                                                  */
    int      few_shot;              /* self-instruct: examples in the list (default 4)           */
    int      few_shot_generated;    /* of which earlier outputs, once there are some (default 1) */
    const char *const *blacklist; int n_blacklist;   /* NULL: image(s), picture(s), graph(s),
                                       file(s), map(s), draw, plot, go to, video, audio, music,
                                       flowchart, diagram                                       */
    int64_t  max_generated;         /* stop after this many proposals, or generate calls (a model
                                       that proposes nothing parseable) (default 20 * missing + 20) */
    ft_log_fn log; void *log_user;  /* progress after each batch (level 0), warnings (1)          */
} ft_synth_opts;
typedef struct ft_synth_stats {
    int64_t generated;              /* instructions proposed in this run                          */
    int64_t kept;                   /* examples written in this run                              */
    int64_t resumed;                /* examples found in the output file at the start            */
    int64_t rejected[FT_SYNTH_REASON_COUNT];   /* per reason (index FT_SYNTH_KEPT unused)        */
    int64_t calls;                  /* ft_generate calls                                          */
    int64_t evol_ops[6];            /* evol: kept examples per operation (ft_synth_evol_op_name) */
    double  seconds;
    int     stopped;                /* 1: max_generated reached before n                          */
} ft_synth_stats;
/* ROUGE-L F-measure of two texts as rouge_score 0.1.2 computes rougeL's fmeasure with its default
   tokenizer (lowercase; every run of characters other than a-z, 0-9 separates tokens); 0 when
   either has no token. Symmetric. */
FT_API double ft_rouge_l(const char *a, const char *b);
/* each user message (with the optional system message, through the model's chat template with the
   generation prompt, then prefill[i] if prefill) continued by ft_generate in one batch of n, up to
   max_new tokens, stopping at EOS or <|im_end|>. out[i]: the text (valid UTF-8, invalid bytes
   dropped; free with ft_synth_texts_free); truncated[i] (optional): 1 when max_new ended it. */
FT_API ft_result ft_synth_generate(ft_ctx *ctx, ft_model *m, int64_t n, const char *const *user,
                                   const char *const *prefill, const char *system, int max_new,
                                   const ft_sample_opts *s, ft_rng *rng, char **out, int *truncated);
FT_API void      ft_synth_texts_free(char **t, int64_t n);       /* frees t[0..n-1], not t       */
/* the items of a numbered list the model continued after "first." (its first line is item
   `first`; then lines "N. ..." or "N) ..."; an unnumbered line ends the list; a truncated text
   loses its last item). Items trimmed, surrounding quotes / ** removed; at most cap into out
   (free with ft_synth_texts_free). Returns the count. */
FT_API int       ft_synth_parse_list(const char *text, int first, int truncated, char **out, int cap);
/* the instruction filters in order: format, length, keyword, then with an original (evol) copied
   words and no new information, then duplicate and ROUGE-L against pool[0..n_pool-1] (entries
   equal to the original skipped). *max_rouge (optional): the highest ROUGE-L seen. */
FT_API ft_synth_reason ft_synth_check_instruction(const char *inst, const char *original,
                                                  const char *const *pool, int64_t n_pool,
                                                  const ft_synth_opts *o, double *max_rouge);
FT_API ft_synth_reason ft_synth_check_answer(const char *answer, const char *instruction, const ft_synth_opts *o);
/* the pipelines: seed tasks from seed_path (JSONL, "instruction" and optional "input"); examples
   {"instruction", "input": "", "output"} (evol: also "evol": the operation) appended to out_path
   one line at a time, flushed. An existing out_path is resumed: its lines count towards o->n and
   its instructions join the pool. */
/* temperature 0.7, top-p 0.9, batch 4, 64 / 160 new tokens, ROUGE-L 0.7 (evol 0.9), 3-150 words */
FT_API ft_synth_opts ft_synth_opts_default(ft_synth_method method);
FT_API ft_result ft_synth_self_instruct(ft_ctx *ctx, ft_model *m, const char *seed_path, const char *out_path,
                                        const ft_synth_opts *o, ft_synth_stats *st);
FT_API ft_result ft_synth_evol_instruct(ft_ctx *ctx, ft_model *m, const char *seed_path, const char *out_path,
                                        const ft_synth_opts *o, ft_synth_stats *st);
FT_API const char *ft_synth_reason_name(ft_synth_reason r);   /* "format", "too_short", ...     */
FT_API const char *ft_synth_evol_op_name(int op);             /* "constraints", ..., "breadth"   */

/* ---- merging models and adapters (mergekit's definitions) ---------------------------------------------- */
typedef enum ft_merge_method {
    FT_MERGE_LINEAR = 0,            /* sum w_i x_i (/ sum w_i with normalize): a weighted average            */
    FT_MERGE_TASK,                  /* task arithmetic: base + sum w_i (x_i - base)                            */
    FT_MERGE_TIES,                  /* base + disjoint mean of top-density deltas agreeing with the elected sign */
    FT_MERGE_DARE_LINEAR,           /* base + sum w_i (random drop of 1 - density of each delta, rescaled)     */
    FT_MERGE_DARE_TIES              /* DARE's drop, then TIES's sign election and disjoint mean                */
} ft_merge_method;
typedef enum ft_merge_rescale {
    FT_MERGE_RESCALE_DEFAULT = 0,   /* the method's as mergekit 0.1.5: DARE L1, TIES none                     */
    FT_MERGE_RESCALE_NONE,
    FT_MERGE_RESCALE_L1,            /* * |d|_1 / |kept d|_1 per tensor (mergekit >= 0.1.0)                     */
    FT_MERGE_RESCALE_DENSITY        /* / density (the DARE paper; mergekit before 0.1.0)                       */
} ft_merge_rescale;
typedef enum ft_merge_sign { FT_MERGE_SIGN_SUM = 0,    /* sign of the sum of the weighted deltas (TIES) */
                             FT_MERGE_SIGN_COUNT       /* sign of the sum of their signs                 */
} ft_merge_sign;
typedef struct ft_merge_opts {
    ft_merge_method  method;
    int      normalize;             /* 0: the method's default (linear, ties: on; task, dare_*: off); 1 on; -1 off */
    ft_merge_rescale rescale;
    ft_merge_sign    sign;          /* TIES, DARE-TIES                                                          */
    float    lambda;                /* scale of the merged delta (0: 1); not used by linear                    */
    uint64_t seed;                  /* DARE's masks (ft_merge_models: per tensor, see there)                    */
    ft_type  type;                  /* ft_merge_models: storage of merged 2-D weights: F32 (default), F16, BF16,
                                       Q8_0, Q4_0, Q4_1; 1-D tensors (norms, biases) stay F32                   */
    int      lora_deltas;           /* ft_merge_models, LoRA inputs: merge the deltas s B A themselves (1), not
                                       the adapted weights W + s B A (0); only linear differs (see there)       */
    ft_log_fn log; void *log_user;  /* ft_merge_models: progress (level 0) and warnings (1)                    */
} ft_merge_opts;
/* One tensor of n elements. x[0..k-1] (each n floats) are the fine-tuned tensors, base the one they
   started from (n; unused by linear, may be NULL there). weights[k]; densities[k] (NULL: all 1) are
   TIES's and DARE's fraction kept. keep[k]: DARE's masks (n bytes each, non-zero keeps) or NULL to
   draw them from rng (keep with probability density; input 0's n draws first, then input 1's, ...;
   rng NULL: seeded with o->seed). out may alias base. */
/* the method's defaults as mergekit 0.1.5 has them (normalize, rescale resolved), lambda 1, F32 */
FT_API ft_merge_opts ft_merge_opts_default(ft_merge_method method);
FT_API ft_result ft_merge_tensor(float *out, const float *base, const float *const *x, int k, int64_t n,
                                 const double *weights, const double *densities,
                                 const unsigned char *const *keep, ft_rng *rng, const ft_merge_opts *o);
/* the same on task vectors d[i] = x_i - base, which are overwritten (trimmed / dropped and weighted in
   place): out (n) = the merged delta with normalize and lambda applied (add it to the base). Linear on
   deltas is sum w_i d_i (/ sum w_i with normalize). */
FT_API ft_result ft_merge_deltas(float *out, float *const *d, int k, int64_t n, const double *weights,
                                 const double *densities, const unsigned char *const *keep, ft_rng *rng,
                                 const ft_merge_opts *o);
typedef struct ft_merge_input {
    const char *path;               /* a model GGUF with the base's tensors; a LoRA adapter GGUF (llama.cpp's,
                                       or finetune.h's own: LoRA, or full fine-tuning's trained tensors)     */
    double weight;
    double density;                 /* TIES, DARE: fraction kept (0: 1, everything)                            */
} ft_merge_input;
typedef struct ft_merge_stats { int64_t merged, copied; uint64_t bytes; } ft_merge_stats;
/* Merge n inputs over a base model and write a model GGUF to out_path (atomically), one tensor at a
   time (memory: a few copies of the largest tensor). The base's metadata and tokenizer are copied.
   A LoRA input's tensor is W + s B A (s = alpha / r), or with lora_deltas its delta s B A alone; the
   tensors an adapter does not touch are the base's. A tensor equal in the base and every input, and
   touched by no adapter, is copied as it is stored (linear: when the weights average it to itself).
   DARE's masks: an rng seeded with o->seed ^ FNV-1a-64(tensor name), drawn as ft_merge_tensor does. */
FT_API ft_result ft_merge_models(const char *out_path, const char *base_path, const ft_merge_input *in, int n,
                                 const ft_merge_opts *o, ft_merge_stats *st);
FT_API const char *ft_merge_method_name(ft_merge_method m);      /* "linear", "task", "ties", ...          */
FT_API int         ft_merge_method_parse(const char *s, ft_merge_method *m);   /* 1: known name            */

/* ---- names of the enums: what the command line, configs and logs call each value ------------- */
typedef enum ft_enum {
    FT_ENUM_TYPE = 0,               /* ft_type: "f32", "q4_1", "nf4", ...                         */
    FT_ENUM_OBJECTIVE,              /* ft_objective: "sft", "dpo", ... (the objective table)      */
    FT_ENUM_PEFT_METHOD,            /* ft_peft_method: "lora", "adapter", ...                      */
    FT_ENUM_SCHED,                  /* ft_sched_kind: "cosine", "linear", "constant"              */
    FT_ENUM_OPTIM,                  /* ft_optim_kind: "adamw", "sgd"                               */
    FT_ENUM_ACT,                    /* ft_act: "relu", "gelu", "silu", "tanh"                      */
    FT_ENUM_ADAPTER_PLACE,          /* ft_adapter_place: "houlsby", "pfeiffer"                     */
    FT_ENUM_PROMPT_INIT,            /* ft_prompt_init: "random", "vocab", "text"                   */
    FT_ENUM_GRPO_AGG,               /* ft_grpo_agg: "grpo", "bnpo", "dr_grpo", "dapo"              */
    FT_ENUM_ADV_SCALE,              /* ft_adv_scale: "group", "batch", "none"                      */
    FT_ENUM_DATA_FORMAT,            /* ft_data_format: "auto", "text", "instruct", ...             */
    FT_ENUM_ADAPTER_FORMAT,         /* ft_adapter_format: "auto", "llamacpp", "peft", "finetune"   */
    FT_ENUM_MERGE_METHOD,           /* ft_merge_method: "linear", "task", "ties", ...              */
    FT_ENUM_MERGE_SIGN,             /* ft_merge_sign: "sum", "count"                               */
    FT_ENUM_MERGE_RESCALE,          /* ft_merge_rescale: "default", "none", "l1", "density"        */
    FT_ENUM_SYNTH_METHOD,           /* ft_synth_method: "self-instruct", "evol-instruct"          */
    FT_ENUM_COUNT
} ft_enum;
FT_API int         ft_enum_count(ft_enum e);                    /* its values are 0 .. count-1      */
FT_API const char *ft_enum_name(ft_enum e, int value);          /* NULL: no such value               */
FT_API int         ft_enum_parse(ft_enum e, const char *name, int *value);   /* 1: a known name     */

#ifdef __cplusplus
}
#endif
#endif /* FINETUNE_H */

/* ============================================================================================
   IMPLEMENTATION
   ============================================================================================ */
#if defined(FINETUNE_IMPLEMENTATION) && !defined(FT__IMPLEMENTATION_DONE)
#define FT__IMPLEMENTATION_DONE        /* once per translation unit, however often it is included */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <float.h>
#include <time.h>

#if defined(FT_MALLOC) && defined(FT_FREE) && defined(FT_REALLOC)
/* all three given: ok */
#elif !defined(FT_MALLOC) && !defined(FT_FREE) && !defined(FT_REALLOC)
#define FT_MALLOC(sz)      malloc(sz)
#define FT_REALLOC(p, sz)  realloc(p, sz)
#define FT_FREE(p)         free(p)
#else
#error "Define all of FT_MALLOC, FT_REALLOC and FT_FREE, or none of them."
#endif

#ifndef FT_ASSERT
#include <assert.h>
#define FT_ASSERT(x) assert(x)
#endif

#ifndef FT_MAX_THREADS
#define FT_MAX_THREADS 64
#endif

#if !defined(FT_NO_THREADS)
#include <pthread.h>
#include <unistd.h>
#endif

#define FT__CAST(T, x) ((T)(x))
#if defined(__GNUC__) || defined(__clang__)
#define FT__MAYBE_UNUSED __attribute__((unused))   /* references kept for tests and later sections */
#else
#define FT__MAYBE_UNUSED
#endif
#define FT__MIN(a, b) ((a) < (b) ? (a) : (b))
#define FT__MAX(a, b) ((a) > (b) ? (a) : (b))
/* a hint to load the cache line at p (never faults, even past the end of an array) */
#if defined(__GNUC__) || defined(__clang__)
#define FT__PREFETCH(p) __builtin_prefetch(p)
#else
#define FT__PREFETCH(p) ((void)0)
#endif
#define FT__ALIGN 64

/* thread-local storage for the error message: the one piece of per-thread state */
#if defined(__cplusplus) && __cplusplus >= 201103L
#define FT__TLS thread_local
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L && !defined(__STDC_NO_THREADS__)
#define FT__TLS _Thread_local
#elif defined(__GNUC__) || defined(__clang__)
#define FT__TLS __thread
#elif defined(_MSC_VER)
#define FT__TLS __declspec(thread)
#else
#define FT__TLS /* no TLS: messages are shared between threads */
#endif

/* ============================================================================================
   [platform] errors, allocation, timing, thread pool
   ============================================================================================ */

static FT__TLS char ft__errbuf[1024];

FT_API const char *ft_result_string(ft_result r) {
    switch (r) {
    case FT_OK:              return "ok";
    case FT_ERR_NOMEM:       return "out of memory";
    case FT_ERR_IO:          return "i/o error";
    case FT_ERR_FORMAT:      return "malformed input";
    case FT_ERR_SHAPE:       return "shape mismatch";
    case FT_ERR_INVALID:     return "invalid argument";
    case FT_ERR_UNSUPPORTED: return "unsupported";
    case FT_ERR_NUMERIC:     return "non-finite value";
    case FT_ERR_INPLACE:     return "in-place modification of a saved tensor";
    case FT_ERR_STATE:       return "call out of order";
    }
    return "unknown result";
}

FT_API const char *ft_last_error(void) { return ft__errbuf; }

/* formatted into a buffer of its own first: a message may quote the last one (ft_last_error()) */
FT_API ft_result ft_set_error(ft_result r, const char *fmt, ...) {
    char msg[sizeof ft__errbuf];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    memcpy(ft__errbuf, msg, sizeof msg);
    return r;
}

/* 64-byte aligned blocks on top of FT_MALLOC: the original pointer sits just below the block */
static void *ft__aligned_alloc(size_t bytes) {
    unsigned char *raw, *p;
    if (bytes > SIZE_MAX - FT__ALIGN - sizeof(void *)) return NULL;
    raw = FT__CAST(unsigned char *, FT_MALLOC(bytes + FT__ALIGN + sizeof(void *)));
    if (!raw) return NULL;
    p = raw + sizeof(void *);
    p += (FT__ALIGN - (uintptr_t)p % FT__ALIGN) % FT__ALIGN;
    memcpy(p - sizeof(void *), &raw, sizeof(void *));
    return p;
}
static void ft__aligned_free(void *p) {
    void *raw;
    if (!p) return;
    memcpy(&raw, FT__CAST(unsigned char *, p) - sizeof(void *), sizeof(void *));
    FT_FREE(raw);
}

FT_API double ft_time_seconds(void) {
#if defined(CLOCK_MONOTONIC) && !defined(_WIN32)
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#elif defined(__linux__) && !defined(FT_NO_THREADS)
    /* strict C99 hides clock_gettime (and CLOCK_MONOTONIC = 1 on Linux); glibc's pthread.h still
       declares struct timespec, and the function is in libc: wall time, not process CPU time */
    extern int clock_gettime(int, struct timespec *);
    struct timespec ts;
    clock_gettime(1, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#else
    return (double)clock() / CLOCKS_PER_SEC;
#endif
}

/* ---- thread pool ----------------------------------------------------------------------------
   n-1 workers plus the caller. ft__pool_run(pool, fn, arg) calls fn(arg, ith, nth) once for every
   ith in [0, nth) and returns when all have finished. Work splits are static (ith decides the
   share), so a result depends only on nth, never on timing. Each thread owns a scratch buffer
   (GEMM packing) that only grows. A training step hands the pool a few thousand short jobs: an
   idle worker (and the caller waiting for the others) first spins on the job counter for a few
   tens of microseconds before it sleeps on the condition variable, so a job that follows soon
   after the last one does not wait for a thread to be woken (GCC and Clang: atomic loads). */
typedef void (*ft__task_fn)(void *arg, int ith, int nth);
#if (defined(__GNUC__) || defined(__clang__)) && !defined(FT_NO_THREADS)
#define FT__SPIN 4000                           /* polls before sleeping (~30-60 us)            */
#define FT__ATOMIC_LOAD(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define FT__ATOMIC_STORE(x, v) __atomic_store_n(&(x), v, __ATOMIC_RELEASE)   /* (writers hold the lock) */
#if defined(__x86_64__) || defined(__i386__)
#define FT__RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define FT__RELAX() __asm__ __volatile__("yield")
#else
#define FT__RELAX() ((void)0)
#endif
#else
#define FT__SPIN 0
#define FT__ATOMIC_LOAD(x) (x)
#define FT__ATOMIC_STORE(x, v) ((x) = (v))
#define FT__RELAX() ((void)0)
#endif

typedef struct ft__pool {
    int n;                                  /* threads including the caller                  */
    float *scratch[FT_MAX_THREADS];         /* per-thread scratch, 64-byte aligned           */
    size_t scratch_len[FT_MAX_THREADS];     /* in floats                                     */
    size_t *mallocs;                        /* owner's malloc counter                        */
#if !defined(FT_NO_THREADS)
    pthread_t th[FT_MAX_THREADS];
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    ft__task_fn fn;
    void *arg;
    int nth;                                /* threads taking part in the current job        */
    unsigned long gen;                      /* job generation                                */
    int pending;                            /* workers still running the current job         */
    int quit;
#endif
} ft__pool;

typedef struct ft__worker_arg { ft__pool *pool; int ith; } ft__worker_arg;

#if !defined(FT_NO_THREADS)
static void *ft__worker_main(void *p) {
    ft__pool *pool = ((ft__worker_arg *)p)->pool;
    int ith = ((ft__worker_arg *)p)->ith;
    unsigned long seen = 0;
    FT_FREE(p);
    for (;;) {
        ft__task_fn fn; void *arg; int nth, spin;
        for (spin = 0; spin < FT__SPIN && FT__ATOMIC_LOAD(pool->gen) == seen && !FT__ATOMIC_LOAD(pool->quit); spin++) FT__RELAX();
        pthread_mutex_lock(&pool->mu);
        while (pool->gen == seen && !pool->quit) pthread_cond_wait(&pool->wake, &pool->mu);
        if (pool->quit) { pthread_mutex_unlock(&pool->mu); return NULL; }
        seen = pool->gen; fn = pool->fn; arg = pool->arg; nth = pool->nth;
        pthread_mutex_unlock(&pool->mu);
        if (ith < nth) fn(arg, ith, nth);
        pthread_mutex_lock(&pool->mu);
        FT__ATOMIC_STORE(pool->pending, pool->pending - 1);
        if (pool->pending == 0) pthread_cond_signal(&pool->done);
        pthread_mutex_unlock(&pool->mu);
    }
}
#endif

static void ft__pool_stop(ft__pool *pool) {
    int i;
#if !defined(FT_NO_THREADS)
    if (pool->n > 1) {
        pthread_mutex_lock(&pool->mu);
        FT__ATOMIC_STORE(pool->quit, 1);
        pthread_cond_broadcast(&pool->wake);
        pthread_mutex_unlock(&pool->mu);
        for (i = 1; i < pool->n; i++) pthread_join(pool->th[i], NULL);
        pthread_mutex_destroy(&pool->mu);
        pthread_cond_destroy(&pool->wake);
        pthread_cond_destroy(&pool->done);
    }
#endif
    for (i = 0; i < FT_MAX_THREADS; i++) { ft__aligned_free(pool->scratch[i]); pool->scratch[i] = NULL; pool->scratch_len[i] = 0; }
    pool->n = 0;
}

static ft_result ft__pool_start(ft__pool *pool, int n) {
#if defined(FT_NO_THREADS)
    pool->n = 1; (void)n;
    return FT_OK;
#else
    int i;
    if (n < 1) n = 1;
    if (n > FT_MAX_THREADS) n = FT_MAX_THREADS;
    pool->n = n; pool->gen = 0; pool->quit = 0; pool->pending = 0;
    if (n == 1) return FT_OK;
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pthread_cond_init(&pool->done, NULL);
    for (i = 1; i < n; i++) {
        ft__worker_arg *wa = FT__CAST(ft__worker_arg *, FT_MALLOC(sizeof *wa));
        if (wa) { wa->pool = pool; wa->ith = i; }
        if (!wa || pthread_create(&pool->th[i], NULL, ft__worker_main, wa) != 0) {
            FT_FREE(wa);
            pool->n = i;                    /* join the ones that started */
            ft__pool_stop(pool);
            return ft_set_error(FT_ERR_NOMEM, "thread pool: could not start thread %d of %d", i, n);
        }
    }
    return FT_OK;
#endif
}

static int ft__pool_size(const ft__pool *pool) { return pool ? pool->n : 1; }

/* run fn on the first nth threads of the pool (nth <= size) */
static void ft__pool_run_n(ft__pool *pool, int nth, ft__task_fn fn, void *arg) {
    if (!pool || nth <= 1 || pool->n <= 1) { fn(arg, 0, 1); return; }
    if (nth > pool->n) nth = pool->n;
#if !defined(FT_NO_THREADS)
    pthread_mutex_lock(&pool->mu);
    pool->fn = fn; pool->arg = arg; pool->nth = nth;
    FT__ATOMIC_STORE(pool->pending, pool->n - 1);
    FT__ATOMIC_STORE(pool->gen, pool->gen + 1);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mu);
    fn(arg, 0, nth);
    { int spin; for (spin = 0; spin < FT__SPIN && FT__ATOMIC_LOAD(pool->pending) > 0; spin++) FT__RELAX(); }
    pthread_mutex_lock(&pool->mu);
    while (pool->pending > 0) pthread_cond_wait(&pool->done, &pool->mu);
    pthread_mutex_unlock(&pool->mu);
#endif
}
FT__MAYBE_UNUSED static void ft__pool_run(ft__pool *pool, ft__task_fn fn, void *arg) {
    ft__pool_run_n(pool, ft__pool_size(pool), fn, arg);
}

/* per-thread scratch of at least n floats; grows (and counts a malloc) only when too small */
FT__MAYBE_UNUSED static float *ft__pool_scratch(ft__pool *pool, int ith, size_t n) {
    if (!pool) return NULL;
    if (pool->scratch_len[ith] < n) {
        ft__aligned_free(pool->scratch[ith]);
        pool->scratch[ith] = FT__CAST(float *, ft__aligned_alloc(n * sizeof(float)));
        pool->scratch_len[ith] = pool->scratch[ith] ? n : 0;
        if (pool->mallocs) (*pool->mallocs)++;
    }
    return pool->scratch[ith];
}

/* static split of [0, n) into nth nearly equal ranges: this thread gets [*lo, *hi) */
static void ft__split(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi) {
    int64_t q = n / nth, r = n % nth;
    *lo = ith * q + FT__MIN((int64_t)ith, r);
    *hi = *lo + q + (ith < r ? 1 : 0);
}

static int ft__env_threads(void) {
    const char *s = getenv("FT_THREADS");
    if (s && atoi(s) > 0) return atoi(s);
#if !defined(FT_NO_THREADS) && defined(_SC_NPROCESSORS_ONLN)
    { long n = sysconf(_SC_NPROCESSORS_ONLN); if (n > 0) return (int)n; }
#endif
    return 1;
}

/* ============================================================================================
   [memory] storage types, f16/bf16, RNG, arena, context, tensors, parameter blocks
   ============================================================================================ */

/* f16 <-> f32, exact for every f16 (subnormals, inf, nan); f32 -> f16 rounds to nearest even.
   With F16C the conversion is one instruction (the same IEEE result). */
#if !defined(FT_NO_SIMD) && defined(__F16C__)
#include <immintrin.h>
#define FT__F16C 1
#endif
FT_API float ft_fp16_to_fp32(uint16_t h) {
#ifdef FT__F16C
    return _cvtsh_ss(h);
#else
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    float f;
    if (exp == 0) {
        if (man == 0) bits = sign;
        else {                                   /* subnormal: renormalise */
            int e = -1;
            do { e++; man <<= 1; } while (!(man & 0x400u));
            bits = sign | (uint32_t)(127 - 15 - e) << 23 | (man & 0x3ffu) << 13;
        }
    } else if (exp == 31) bits = sign | 0x7f800000u | man << 13;
    else bits = sign | (exp + 112) << 23 | man << 13;
    memcpy(&f, &bits, 4);
    return f;
#endif
}

FT_API uint16_t ft_fp32_to_fp16(float f) {
    uint32_t x, sign, mag;
    memcpy(&x, &f, 4);
    sign = (x >> 16) & 0x8000u;
    mag = x & 0x7fffffffu;
    if (mag >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (mag > 0x7f800000u ? 0x200u : 0));
    if (mag >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);      /* rounds to >= 65520: inf */
    if (mag < 0x38800000u) {                                        /* result is subnormal      */
        uint32_t m = (mag & 0x7fffffu) | 0x800000u;
        int shift = 113 - (int)(mag >> 23) + 13;                    /* 14..24+                  */
        uint32_t r, half, q;
        if (shift > 24) return (uint16_t)sign;
        q = m >> shift; r = m & ((1u << shift) - 1); half = 1u << (shift - 1);
        if (r > half || (r == half && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    {
        uint32_t v = mag - (112u << 23);                            /* rebias the exponent     */
        uint32_t q = v >> 13, r = v & 0x1fffu;
        if (r > 0x1000u || (r == 0x1000u && (q & 1))) q++;          /* may carry into exponent */
        return (uint16_t)(sign | q);
    }
}

FT_API float ft_bf16_to_fp32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16; float f;
    memcpy(&f, &bits, 4);
    return f;
}
FT_API uint16_t ft_fp32_to_bf16(float f) {
    uint32_t x; memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);   /* quiet nan */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

/* ---- storage type table: one row per type (the GGUF loader fills in the quantized ones) ---- */
typedef void (*ft__to_f32_fn)(const void *src, float *dst, int64_t n);   /* n % block == 0 */

static void ft__f32_to_f32(const void *src, float *dst, int64_t n) { memcpy(dst, src, (size_t)n * 4); }
static void ft__f16_to_f32(const void *src, float *dst, int64_t n) {
    const uint16_t *s = FT__CAST(const uint16_t *, src); int64_t i;
    for (i = 0; i < n; i++) dst[i] = ft_fp16_to_fp32(s[i]);
}
static void ft__bf16_to_f32(const void *src, float *dst, int64_t n) {
    const uint16_t *s = FT__CAST(const uint16_t *, src); int64_t i;
    for (i = 0; i < n; i++) dst[i] = ft_bf16_to_fp32(s[i]);
}

typedef struct ft__type_info {
    const char *name;
    int block;                  /* elements per block                                        */
    int bytes;                  /* bytes per block                                           */
    ft__to_f32_fn to_f32;       /* dequantize / widen a row; NULL: storage only              */
} ft__type_info;

/* the quantized formats' decoders live in the [quant] section */
static void ft__dequant_q4_0(const void *src, float *dst, int64_t n);
static void ft__dequant_q4_1(const void *src, float *dst, int64_t n);
static void ft__dequant_q5_0(const void *src, float *dst, int64_t n);
static void ft__dequant_q5_1(const void *src, float *dst, int64_t n);
static void ft__dequant_q8_0(const void *src, float *dst, int64_t n);
static void ft__dequant_iq4_nl(const void *src, float *dst, int64_t n);
static void ft__dequant_q2_k(const void *src, float *dst, int64_t n);
static void ft__dequant_q3_k(const void *src, float *dst, int64_t n);
static void ft__dequant_q4_k(const void *src, float *dst, int64_t n);
static void ft__dequant_q5_k(const void *src, float *dst, int64_t n);
static void ft__dequant_q6_k(const void *src, float *dst, int64_t n);
/* a row (or part of one) of a weight in any storage type, NF4 included ([quant] section) */
static void ft__weight_row(const ft_tensor *W, int64_t n, int64_t k0, int64_t kc, float *dst);
static int  ft__weight_decodable(const ft_tensor *W, int64_t K);

/* indexed by ggml type id; sizes for every GGUF type so any file can be parsed, decoders for
   the types a model can be computed with */
static const ft__type_info ft__types[] = {
    /*  0 */ {"f32", 1, 4, ft__f32_to_f32},         {"f16", 1, 2, ft__f16_to_f32},
    /*  2 */ {"q4_0", 32, 18, ft__dequant_q4_0},    {"q4_1", 32, 20, ft__dequant_q4_1},
    /*  4 */ {NULL, 0, 0, NULL},                    {NULL, 0, 0, NULL},
    /*  6 */ {"q5_0", 32, 22, ft__dequant_q5_0},    {"q5_1", 32, 24, ft__dequant_q5_1},
    /*  8 */ {"q8_0", 32, 34, ft__dequant_q8_0},    {"q8_1", 32, 36, NULL},
    /* 10 */ {"q2_K", 256, 84, ft__dequant_q2_k},   {"q3_K", 256, 110, ft__dequant_q3_k},
    /* 12 */ {"q4_K", 256, 144, ft__dequant_q4_k},  {"q5_K", 256, 176, ft__dequant_q5_k},
    /* 14 */ {"q6_K", 256, 210, ft__dequant_q6_k},  {"q8_K", 256, 292, NULL},
    /* 16 */ {"iq2_xxs", 256, 66, NULL},            {"iq2_xs", 256, 74, NULL},
    /* 18 */ {"iq3_xxs", 256, 98, NULL},            {"iq1_s", 256, 50, NULL},
    /* 20 */ {"iq4_nl", 32, 18, ft__dequant_iq4_nl}, {"iq3_s", 256, 110, NULL},
    /* 22 */ {"iq2_s", 256, 82, NULL},              {"iq4_xs", 256, 136, NULL},
    /* 24 */ {"i8", 1, 1, NULL},                    {"i16", 1, 2, NULL},
    /* 26 */ {"i32", 1, 4, NULL},                   {"i64", 1, 8, NULL},
    /* 28 */ {"f64", 1, 8, NULL},                   {"iq1_m", 256, 56, NULL},
    /* 30 */ {"bf16", 1, 2, ft__bf16_to_f32},       {NULL, 0, 0, NULL},
    /* 32 */ {NULL, 0, 0, NULL},                    {NULL, 0, 0, NULL},
    /* 34 */ {"tq1_0", 256, 54, NULL},              {"tq2_0", 256, 66, NULL}
};

/* a GGML type (what a GGUF tensor info may name), or NULL */
static const ft__type_info *ft__type(ft_type t) {
    if ((int)t < 0 || (size_t)t >= sizeof ft__types / sizeof ft__types[0] || !ft__types[t].name) return NULL;
    return &ft__types[t];
}
/* NF4 is not a per-block format (its state lives in ft_tensor.nf4, decoded by the [quant]
   section's ft__nf4_decode): no to_f32. Its row of n weights is n/2 bytes when n % 64 == 0. */
static const ft__type_info ft__type_nf4 = {"nf4", 64, 32, NULL};
/* any storage type: the GGML ones and NF4 */
static const ft__type_info *ft__type_any(ft_type t) { return t == FT_TYPE_NF4 ? &ft__type_nf4 : ft__type(t); }

FT_API const char *ft_type_name(ft_type t) { const ft__type_info *ti = ft__type_any(t); return ti ? ti->name : "?"; }
FT_API int ft_type_block(ft_type t) { const ft__type_info *ti = ft__type_any(t); return ti ? ti->block : 0; }
FT_API size_t ft_type_row_bytes(ft_type t, int64_t n) {
    const ft__type_info *ti = ft__type_any(t);
    return ti ? (size_t)(n / ti->block) * (size_t)ti->bytes : 0;
}

/* ---- RNG: xorshift128+ seeded by splitmix64 (small, fast, identical on every platform) ---- */
static uint64_t ft__splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
FT_API void ft_rng_seed(ft_rng *r, uint64_t seed) {
    r->s[0] = ft__splitmix64(&seed);
    r->s[1] = ft__splitmix64(&seed);
    if (!r->s[0] && !r->s[1]) r->s[1] = 1;
}
FT_API uint64_t ft_rng_u64(ft_rng *r) {
    uint64_t s1 = r->s[0], s0 = r->s[1];
    r->s[0] = s0;
    s1 ^= s1 << 23;
    r->s[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return r->s[1] + s0;
}
FT_API float ft_rng_uniform(ft_rng *r) { return (float)(ft_rng_u64(r) >> 40) * (1.0f / 16777216.0f); }
FT_API float ft_rng_normal(ft_rng *r) {
    double u1 = ((double)(ft_rng_u64(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
    double u2 = (double)(ft_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* ---- the per-step arena -----------------------------------------------------------------------
   A bump allocator over one block. What does not fit goes to overflow blocks; the next reset
   frees them and regrows the main block to the high-water mark, so from the second step on a
   training loop allocates nothing. A mark taken with ft__arena_mark_get can be rewound to
   (LIFO): everything allocated after it is given back, overflow blocks included (gradient
   checkpointing drops a segment's intermediates this way). */
typedef struct ft__arena {
    unsigned char *base;
    size_t cap, used;
    size_t peak;                            /* most bytes live at once this step (main + overflow) */
    void **extra; int n_extra, cap_extra;   /* overflow blocks live now                      */
    size_t extra_bytes;                     /* their bytes                                   */
    int overflowed;                         /* an overflow block was needed this step        */
} ft__arena;
typedef struct ft__arena_mark { size_t used, extra_bytes; int n_extra; } ft__arena_mark;

typedef struct ft__node ft__node;

/* RoPE's cos/sin table for positions and options used lately (see ft__rope_table); two of them,
   as a model whose layers alternate two bases (gemma3's local and global) uses two */
typedef struct ft__rope_cache {
    float *cs; int32_t *pos; float *ff; size_t cap, cap_pos, cap_ff; int64_t N;
    ft_rope_opts o; unsigned long used;     /* o.freq_factors points at ff when set */
} ft__rope_cache;

struct ft_ctx {
    ft__pool  pool;
    ft__arena arena;
    ft__node *tape; int n_tape, cap_tape;
    int       grad_enabled;
    int       checkpointing;        /* ft_ctx_set_checkpointing: recompute segments in backward */
    int       backward_done;
    ft_result status;
    ft_rng    rng;
    ft_log_fn log; void *log_user;
    size_t    mallocs;
    ft__rope_cache rope[2]; unsigned long rope_clock;
    unsigned long resets;           /* ft_ctx_reset calls: what the tape's tensors belong to     */
};

static void *ft__arena_alloc(ft_ctx *ctx, size_t bytes) {
    ft__arena *a = &ctx->arena;
    size_t off = (a->used + FT__ALIGN - 1) & ~(size_t)(FT__ALIGN - 1);
    void *p;
    if (bytes == 0) bytes = 1;
    if (a->base && off <= a->cap && bytes <= a->cap - off) {
        a->used = off + bytes;
        if (a->used + a->extra_bytes > a->peak) a->peak = a->used + a->extra_bytes;
        return a->base + off;
    }
    if (a->n_extra == a->cap_extra) {
        int nc = a->cap_extra ? 2 * a->cap_extra : 16;
        void **ne = FT__CAST(void **, FT_REALLOC(a->extra, (size_t)nc * sizeof(void *)));
        if (!ne) return NULL;
        a->extra = ne; a->cap_extra = nc; ctx->mallocs++;
    }
    p = ft__aligned_alloc(bytes);
    if (!p) return NULL;
    ctx->mallocs++;
    a->extra[a->n_extra++] = p;
    a->extra_bytes += bytes + FT__ALIGN;
    a->overflowed = 1;
    if (a->used + a->extra_bytes > a->peak) a->peak = a->used + a->extra_bytes;
    return p;
}

static ft__arena_mark ft__arena_mark_get(const ft_ctx *ctx) {
    ft__arena_mark mk;
    mk.used = ctx->arena.used; mk.extra_bytes = ctx->arena.extra_bytes; mk.n_extra = ctx->arena.n_extra;
    return mk;
}
/* give back everything allocated since mk (the peak keeps what it saw) */
static void ft__arena_rewind(ft_ctx *ctx, const ft__arena_mark *mk) {
    ft__arena *a = &ctx->arena;
    while (a->n_extra > mk->n_extra) ft__aligned_free(a->extra[--a->n_extra]);
    a->extra_bytes = mk->extra_bytes;
    a->used = mk->used;
}

static void ft__arena_reset(ft_ctx *ctx) {
    ft__arena *a = &ctx->arena;
    int i;
    for (i = 0; i < a->n_extra; i++) ft__aligned_free(a->extra[i]);
    a->n_extra = 0; a->extra_bytes = 0;
    if (a->overflowed) {                    /* grow the main block to the high-water mark    */
        size_t want = a->peak;
        want += want / 2;                   /* head room: steps differ in size (padding)     */
        ft__aligned_free(a->base);
        a->base = FT__CAST(unsigned char *, ft__aligned_alloc(want));
        a->cap = a->base ? want : 0;
        ctx->mallocs++;
        a->overflowed = 0;
    }
    a->used = 0; a->peak = 0;
}

FT_API void *ft_arena_alloc(ft_ctx *ctx, size_t bytes) { return ft__arena_alloc(ctx, bytes); }

static void *ft__arena_zalloc(ft_ctx *ctx, size_t bytes) {
    void *p = ft__arena_alloc(ctx, bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

FT_API void ft_log_message(ft_ctx *ctx, int level, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (ctx && ctx->log) ctx->log(ctx->log_user, level, msg);
    else if (level > 0) fprintf(stderr, "finetune: %s\n", msg);
}

FT_API ft_ctx_opts ft_ctx_opts_default(void) {
    ft_ctx_opts o;
    memset(&o, 0, sizeof o);
    o.n_threads = ft__env_threads();
    o.seed = 0x5eed;
    o.arena_bytes = (size_t)64 << 20;
    return o;
}

FT_API ft_result ft_ctx_init(ft_ctx **out, const ft_ctx_opts *opts) {
    ft_ctx *ctx;
    ft_ctx_opts o, d = ft_ctx_opts_default();
    ft_result r;
    FT_ASSERT(out);
    *out = NULL;
    o = opts ? *opts : d;
    if (o.n_threads <= 0) o.n_threads = d.n_threads;
    if (o.arena_bytes == 0) o.arena_bytes = d.arena_bytes;
    if (o.seed == 0) o.seed = d.seed;
    ctx = FT__CAST(ft_ctx *, FT_MALLOC(sizeof *ctx));
    if (!ctx) return ft_set_error(FT_ERR_NOMEM, "ft_ctx_init: out of memory");
    memset(ctx, 0, sizeof *ctx);
    ctx->grad_enabled = 1;
    ctx->log = o.log; ctx->log_user = o.log_user;
    ft_rng_seed(&ctx->rng, o.seed);
    ctx->pool.mallocs = &ctx->mallocs;
    ctx->arena.base = FT__CAST(unsigned char *, ft__aligned_alloc(o.arena_bytes));
    if (!ctx->arena.base) { FT_FREE(ctx); return ft_set_error(FT_ERR_NOMEM, "ft_ctx_init: arena of %zu bytes", o.arena_bytes); }
    ctx->arena.cap = o.arena_bytes;
    r = ft__pool_start(&ctx->pool, o.n_threads);
    if (r != FT_OK) { ft__aligned_free(ctx->arena.base); FT_FREE(ctx); return r; }
    *out = ctx;
    return FT_OK;
}

FT_API void ft_ctx_free(ft_ctx *ctx) {
    if (!ctx) return;
    ft__pool_stop(&ctx->pool);
    ft__arena_reset(ctx);
    ft__aligned_free(ctx->arena.base);
    FT_FREE(ctx->arena.extra);
    FT_FREE(ctx->tape);
    { int i; for (i = 0; i < 2; i++) { FT_FREE(ctx->rope[i].cs); FT_FREE(ctx->rope[i].pos); FT_FREE(ctx->rope[i].ff); } }
    FT_FREE(ctx);
}

FT_API void ft_ctx_reset(ft_ctx *ctx) {
    ft__arena_reset(ctx);
    ctx->resets++;
    ctx->n_tape = 0;
    ctx->backward_done = 0;
    ctx->status = FT_OK;
}

FT_API ft_result ft_ctx_status(const ft_ctx *ctx) { return ctx->status; }
FT_API int ft_ctx_set_grad(ft_ctx *ctx, int enabled) { int old = ctx->grad_enabled; ctx->grad_enabled = enabled != 0; return old; }
FT_API int ft_ctx_threads(const ft_ctx *ctx) { return ft__pool_size(&ctx->pool); }
FT_API ft_result ft_ctx_set_threads(ft_ctx *ctx, int n) {
    if (n < 1 || n > FT_MAX_THREADS) return ft_set_error(FT_ERR_INVALID, "ft_ctx_set_threads: %d threads (1..%d)", n, FT_MAX_THREADS);
    if (n == ctx->pool.n) return FT_OK;
    ft__pool_stop(&ctx->pool);
    return ft__pool_start(&ctx->pool, n);
}
FT_API ft_rng *ft_ctx_rng(ft_ctx *ctx) { return &ctx->rng; }
FT_API size_t ft_ctx_arena_used(const ft_ctx *ctx) { return ctx->arena.used; }
FT_API size_t ft_ctx_arena_capacity(const ft_ctx *ctx) { return ctx->arena.cap; }
FT_API size_t ft_ctx_arena_peak(const ft_ctx *ctx) { return ctx->arena.peak; }
FT_API int ft_ctx_set_checkpointing(ft_ctx *ctx, int enabled) { int old = ctx->checkpointing; ctx->checkpointing = enabled != 0; return old; }
FT_API size_t ft_ctx_mallocs(const ft_ctx *ctx) { return ctx->mallocs; }

/* record the first op error of this step and return NULL (ops propagate NULL) */
static ft_tensor *ft__fail(ft_ctx *ctx, ft_result r, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static ft_tensor *ft__fail(ft_ctx *ctx, ft_result r, const char *fmt, ...) {
    if (ctx->status == FT_OK) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ft__errbuf, sizeof ft__errbuf, fmt, ap);
        va_end(ap);
        ctx->status = r;
    }
    return NULL;
}

/* ---- tensors -------------------------------------------------------------------------------- */
FT_API int64_t ft_numel(const ft_tensor *t) {
    int64_t n = 1; int i;
    for (i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}
FT_API int64_t ft_nrows(const ft_tensor *t) { return t->ndim ? ft_numel(t) / t->shape[t->ndim - 1] : 1; }
FT_API int ft_same_shape(const ft_tensor *a, const ft_tensor *b) {
    int i;
    if (a->ndim != b->ndim) return 0;
    for (i = 0; i < a->ndim; i++) if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}
FT_API void ft_tensor_mark_modified(ft_tensor *t) { (t->view_of ? t->view_of : t)->version++; }

static int ft__valid_shape(int ndim, const int64_t *shape) {
    int i; int64_t n = 1;
    if (ndim < 1 || ndim > FT_MAX_DIMS) return 0;
    for (i = 0; i < ndim; i++) {
        if (shape[i] < 1 || shape[i] > ((int64_t)1 << 40) / n) return 0;
        n *= shape[i];
    }
    return 1;
}

/* a tensor header in the arena; data is allocated (zeroed) unless `data` is given */
static ft_tensor *ft__tensor_x(ft_ctx *ctx, ft_type type, int ndim, const int64_t *shape, void *data, int zero);
static ft_tensor *ft__tensor(ft_ctx *ctx, ft_type type, int ndim, const int64_t *shape, void *data) {
    return ft__tensor_x(ctx, type, ndim, shape, data, 1);
}
static ft_tensor *ft__tensor_x(ft_ctx *ctx, ft_type type, int ndim, const int64_t *shape, void *data, int zero) {
    ft_tensor *t;
    int i;
    if (!ft__valid_shape(ndim, shape)) return ft__fail(ctx, FT_ERR_SHAPE, "tensor: invalid shape (ndim %d)", ndim);
    t = FT__CAST(ft_tensor *, ft__arena_alloc(ctx, sizeof *t));
    if (!t) return ft__fail(ctx, FT_ERR_NOMEM, "tensor: arena out of memory");
    memset(t, 0, sizeof *t);
    t->type = type; t->ndim = ndim;
    for (i = 0; i < FT_MAX_DIMS; i++) t->shape[i] = i < ndim ? shape[i] : 1;
    if (!ctx->grad_enabled) t->flags |= FT_TENSOR_NO_TAPE;
    if (data) t->data = data;
    else {
        size_t bytes = ft_type_row_bytes(type, t->shape[ndim - 1]) * (size_t)ft_nrows(t);
        t->data = zero ? ft__arena_zalloc(ctx, bytes) : ft__arena_alloc(ctx, bytes);
        if (!t->data) return ft__fail(ctx, FT_ERR_NOMEM, "tensor: arena out of memory (%zu bytes)", bytes);
    }
    return t;
}

FT_API ft_tensor *ft_tensor_new(ft_ctx *ctx, ft_type type, int ndim, const int64_t *shape) {
    if (type == FT_TYPE_NF4) return ft__fail(ctx, FT_ERR_UNSUPPORTED, "tensor: an NF4 tensor needs its state (ft_tensor_nf4)");
    if (!ft__type(type)) return ft__fail(ctx, FT_ERR_UNSUPPORTED, "tensor: type %d has no storage here", (int)type);
    return ft__tensor(ctx, type, ndim, shape, NULL);
}
FT_API ft_tensor *ft_tensor_nf4(ft_ctx *ctx, int64_t rows, int64_t cols, const uint8_t *packed, const ft_nf4 *q) {
    int64_t s[2]; ft_tensor *t;
    s[0] = rows; s[1] = cols;
    if (!packed || !q) return ft__fail(ctx, FT_ERR_INVALID, "tensor: an NF4 tensor needs its bytes and state");
    t = ft__tensor_x(ctx, FT_TYPE_NF4, 2, s, FT__CAST(void *, packed), 0);
    if (t) t->nf4 = q;
    return t;
}
FT_API ft_tensor *ft_tensor_1d(ft_ctx *ctx, int64_t n0) { int64_t s[1]; s[0] = n0; return ft__tensor(ctx, FT_TYPE_F32, 1, s, NULL); }
FT_API ft_tensor *ft_tensor_2d(ft_ctx *ctx, int64_t n0, int64_t n1) { int64_t s[2]; s[0] = n0; s[1] = n1; return ft__tensor(ctx, FT_TYPE_F32, 2, s, NULL); }
FT_API ft_tensor *ft_tensor_3d(ft_ctx *ctx, int64_t n0, int64_t n1, int64_t n2) { int64_t s[3]; s[0] = n0; s[1] = n1; s[2] = n2; return ft__tensor(ctx, FT_TYPE_F32, 3, s, NULL); }
FT_API ft_tensor *ft_tensor_4d(ft_ctx *ctx, int64_t n0, int64_t n1, int64_t n2, int64_t n3) { int64_t s[4]; s[0] = n0; s[1] = n1; s[2] = n2; s[3] = n3; return ft__tensor(ctx, FT_TYPE_F32, 4, s, NULL); }

#define FT__F(t) FT__CAST(float *, (t)->data)

/* the gradient buffer of t, allocated (zeroed, in the arena) on first use; a view's gradient is
   the matching slice of its owner's */
static float *ft__grad(ft_ctx *ctx, ft_tensor *t) {
    if (t->grad) return t->grad;
    if (t->view_of) {
        float *g = ft__grad(ctx, t->view_of);
        if (g) t->grad = g + t->view_offset;
        return t->grad;
    }
    t->grad = FT__CAST(float *, ft__arena_zalloc(ctx, (size_t)ft_numel(t) * sizeof(float)));
    if (!t->grad) ft__fail(ctx, FT_ERR_NOMEM, "backward: arena out of memory for a gradient");
    return t->grad;
}
/* the same for a backward that is about to write a whole gradient: a buffer t does not have yet
   (t not a view) is left unzeroed and *fresh = 1 tells the caller to store instead of add */
static float *ft__grad_w(ft_ctx *ctx, ft_tensor *t, int *fresh) {
    *fresh = 0;
    if (t->grad || t->view_of) return ft__grad(ctx, t);
    t->grad = FT__CAST(float *, ft__arena_alloc(ctx, (size_t)ft_numel(t) * sizeof(float)));
    if (!t->grad) ft__fail(ctx, FT_ERR_NOMEM, "backward: arena out of memory for a gradient");
    *fresh = t->grad != NULL;
    return t->grad;
}

/* ---- parameter blocks ------------------------------------------------------------------------ */
struct ft_params {
    ft_tensor **t; int n, cap;
    float *data, *grad;              /* one block each, 64-byte aligned per tensor            */
    int64_t total;                   /* floats in each block, padding included               */
};

FT_API ft_result ft_params_init(ft_params **out) {
    ft_params *p = FT__CAST(ft_params *, FT_MALLOC(sizeof *p));
    *out = NULL;
    if (!p) return ft_set_error(FT_ERR_NOMEM, "ft_params_init: out of memory");
    memset(p, 0, sizeof *p);
    *out = p;
    return FT_OK;
}
FT_API void ft_params_free(ft_params *p) {
    int i;
    if (!p) return;
    for (i = 0; i < p->n; i++) { FT_FREE(FT__CAST(void *, p->t[i]->name)); FT_FREE(p->t[i]); }
    FT_FREE(p->t);
    ft__aligned_free(p->data); ft__aligned_free(p->grad);
    FT_FREE(p);
}
/* the index of the first NaN or infinity of x[0..n), or -1 */
static int64_t ft__nonfinite(const float *x, int64_t n) {
    int64_t i;
    for (i = 0; i < n; i++)
        if (!(fabsf(x[i]) <= FLT_MAX)) return i;
    return -1;
}
/* every value of a parameter block finite, or FT_ERR_NUMERIC naming `what`, the tensor and the index */
static ft_result ft__params_finite(const ft_params *P, const char *what) {
    int i; int64_t j;
    for (i = 0; P && i < P->n; i++)
        if ((j = ft__nonfinite(FT__CAST(const float *, P->t[i]->data), ft_numel(P->t[i]))) >= 0)
            return ft_set_error(FT_ERR_NUMERIC, "%s: %s[%lld] is %g", what, P->t[i]->name, (long long)j, (double)FT__CAST(const float *, P->t[i]->data)[j]);
    return FT_OK;
}
FT_API ft_tensor *ft_params_add(ft_params *p, const char *name, int ndim, const int64_t *shape) {
    ft_tensor *t; int i; size_t nl = strlen(name ? name : "") + 1; char *nm;
    if (p->data) { ft_set_error(FT_ERR_STATE, "ft_params_add(%s): block already allocated", name ? name : "?"); return NULL; }
    if (!ft__valid_shape(ndim, shape)) { ft_set_error(FT_ERR_SHAPE, "ft_params_add(%s): invalid shape", name ? name : "?"); return NULL; }
    if (p->n == p->cap) {
        int nc = p->cap ? 2 * p->cap : 32;
        ft_tensor **nt = FT__CAST(ft_tensor **, FT_REALLOC(p->t, (size_t)nc * sizeof *nt));
        if (!nt) { ft_set_error(FT_ERR_NOMEM, "ft_params_add: out of memory"); return NULL; }
        p->t = nt; p->cap = nc;
    }
    t = FT__CAST(ft_tensor *, FT_MALLOC(sizeof *t));
    nm = FT__CAST(char *, FT_MALLOC(nl));
    if (!t || !nm) { FT_FREE(t); FT_FREE(nm); ft_set_error(FT_ERR_NOMEM, "ft_params_add: out of memory"); return NULL; }
    memcpy(nm, name ? name : "", nl);
    memset(t, 0, sizeof *t);
    t->type = FT_TYPE_F32; t->ndim = ndim; t->name = nm;
    for (i = 0; i < FT_MAX_DIMS; i++) t->shape[i] = i < ndim ? shape[i] : 1;
    t->flags = FT_TENSOR_PARAM | FT_TENSOR_REQUIRES_GRAD;
    p->t[p->n++] = t;
    return t;
}
FT_API ft_result ft_params_alloc(ft_params *p) {
    int64_t off = 0; int i;
    if (p->data) return ft_set_error(FT_ERR_STATE, "ft_params_alloc: already allocated");
    for (i = 0; i < p->n; i++) off += (ft_numel(p->t[i]) + 15) & ~(int64_t)15;   /* 64-byte steps */
    p->total = off;
    p->data = FT__CAST(float *, ft__aligned_alloc((size_t)FT__MAX(off, 1) * sizeof(float)));
    p->grad = FT__CAST(float *, ft__aligned_alloc((size_t)FT__MAX(off, 1) * sizeof(float)));
    if (!p->data || !p->grad) return ft_set_error(FT_ERR_NOMEM, "ft_params_alloc: %lld floats", (long long)off);
    memset(p->data, 0, (size_t)off * sizeof(float));
    memset(p->grad, 0, (size_t)off * sizeof(float));
    for (off = 0, i = 0; i < p->n; i++) {
        p->t[i]->data = p->data + off;
        p->t[i]->grad = p->grad + off;
        off += (ft_numel(p->t[i]) + 15) & ~(int64_t)15;
    }
    return FT_OK;
}
FT_API void ft_params_zero_grad(ft_params *p) { if (p->grad) memset(p->grad, 0, (size_t)p->total * sizeof(float)); }
FT_API int ft_params_count(const ft_params *p) { return p->n; }
FT_API ft_tensor *ft_params_get(ft_params *p, int i) { return i >= 0 && i < p->n ? p->t[i] : NULL; }
FT_API ft_tensor *ft_params_find(ft_params *p, const char *name) {
    int i;
    for (i = 0; i < p->n; i++) if (strcmp(p->t[i]->name, name) == 0) return p->t[i];
    return NULL;
}
FT_API int64_t ft_params_numel(const ft_params *p) {
    int64_t n = 0; int i;
    for (i = 0; i < p->n; i++) n += ft_numel(p->t[i]);
    return n;
}
FT_API void ft_params_init_uniform(ft_params *p, ft_tensor *t, float lo, float hi, ft_ctx *ctx) {
    int64_t i, n = ft_numel(t); float *x = FT__F(t);
    (void)p;
    for (i = 0; i < n; i++) x[i] = lo + (hi - lo) * ft_rng_uniform(&ctx->rng);
    t->version++;
}
FT_API void ft_params_init_normal(ft_params *p, ft_tensor *t, float mean, float std, ft_ctx *ctx) {
    int64_t i, n = ft_numel(t); float *x = FT__F(t);
    (void)p;
    for (i = 0; i < n; i++) x[i] = mean + std * ft_rng_normal(&ctx->rng);
    t->version++;
}

/* ============================================================================================
   [kernels] SIMD vector primitives, GEMM, row kernels
   Every primitive has a scalar reference ft__vec_*_ref that is always compiled (the tests
   compare the two). The SIMD ladder defines one small vector vocabulary (load, store, fma,
   ...) per instruction set; each primitive is then written once on top of it.
   ============================================================================================ */

#if !defined(FT_NO_SIMD) && defined(__AVX512F__)
#if defined(__cplusplus) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
/* g++ 12 warns inside its own AVX-512 intrinsics (_mm512_undefined_ps, GCC PR 105593) */
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#define FT__SIMD_NAME "avx512"
#define FT__W 16
typedef __m512 ft__vf;
#define ft__vzero()       _mm512_setzero_ps()
#define ft__vset1(x)      _mm512_set1_ps(x)
#define ft__vload(p)      _mm512_loadu_ps(p)
#define ft__vstore(p, v)  _mm512_storeu_ps(p, v)
#define ft__vadd(a, b)    _mm512_add_ps(a, b)
#define ft__vsub(a, b)    _mm512_sub_ps(a, b)
#define ft__vmul(a, b)    _mm512_mul_ps(a, b)
#define ft__vdiv(a, b)    _mm512_div_ps(a, b)
#define ft__vfma(a, b, c) _mm512_fmadd_ps(a, b, c)          /* a*b + c                     */
#define ft__vmax(a, b)    _mm512_max_ps(a, b)               /* NaN in b propagates         */
#define ft__vmin(a, b)    _mm512_min_ps(a, b)
/* horizontal sum / max: halves through a union, then 256 -> 128 -> 1 (not _mm512_reduce_* or
   the 512-bit extracts: g++ 12 reports -Wuninitialized inside them) */
typedef union { __m512 v; __m256 h[2]; } ft__v512_halves;
static inline float ft__vhsum(ft__vf v) {
    ft__v512_halves u; __m256 t; __m128 s;
    u.v = v; t = _mm256_add_ps(u.h[0], u.h[1]);
    s = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline float ft__vhmax(ft__vf v) {
    ft__v512_halves u; __m256 t; __m128 s;
    u.v = v; t = _mm256_max_ps(u.h[0], u.h[1]);
    s = _mm_max_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#define ft__vround(x)     _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define ft__vldexp(p, n)  _mm512_scalef_ps(p, n)             /* p * 2^n                     */
#elif !defined(FT_NO_SIMD) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define FT__SIMD_NAME "avx2"
#define FT__W 8
typedef __m256 ft__vf;
#define ft__vzero()       _mm256_setzero_ps()
#define ft__vset1(x)      _mm256_set1_ps(x)
#define ft__vload(p)      _mm256_loadu_ps(p)
#define ft__vstore(p, v)  _mm256_storeu_ps(p, v)
#define ft__vadd(a, b)    _mm256_add_ps(a, b)
#define ft__vsub(a, b)    _mm256_sub_ps(a, b)
#define ft__vmul(a, b)    _mm256_mul_ps(a, b)
#define ft__vdiv(a, b)    _mm256_div_ps(a, b)
#define ft__vfma(a, b, c) _mm256_fmadd_ps(a, b, c)
#define ft__vmax(a, b)    _mm256_max_ps(a, b)
#define ft__vmin(a, b)    _mm256_min_ps(a, b)
static inline float ft__vhsum(ft__vf v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline float ft__vhmax(ft__vf v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#define ft__vround(x)     _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
static inline ft__vf ft__vldexp(ft__vf p, ft__vf n) {
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
#elif !defined(FT_NO_SIMD) && defined(__ARM_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#define FT__SIMD_NAME "neon"
#define FT__W 4
typedef float32x4_t ft__vf;
#define ft__vzero()       vdupq_n_f32(0.0f)
#define ft__vset1(x)      vdupq_n_f32(x)
#define ft__vload(p)      vld1q_f32(p)
#define ft__vstore(p, v)  vst1q_f32(p, v)
#define ft__vadd(a, b)    vaddq_f32(a, b)
#define ft__vsub(a, b)    vsubq_f32(a, b)
#define ft__vmul(a, b)    vmulq_f32(a, b)
#define ft__vdiv(a, b)    vdivq_f32(a, b)
#define ft__vfma(a, b, c) vfmaq_f32(c, a, b)
#define ft__vmax(a, b)    vmaxq_f32(a, b)
#define ft__vmin(a, b)    vminq_f32(a, b)
static inline float ft__vhsum(ft__vf v) { return vaddvq_f32(v); }
static inline float ft__vhmax(ft__vf v) { return vmaxvq_f32(v); }
#define ft__vround(x)     vrndnq_f32(x)
static inline ft__vf ft__vldexp(ft__vf p, ft__vf n) {
    int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    return vmulq_f32(p, vreinterpretq_f32_s32(e));
}
#else
#define FT__SIMD_NAME "scalar"
#endif

FT_API const char *ft_simd_name(void) { return FT__SIMD_NAME; }

#ifdef FT__W
/* e^x on a vector: x = n ln2 + r, |r| <= ln2/2, e^r by the Cephes degree-6 polynomial, times 2^n.
   Inputs are clamped to [-87.3, 88]: below, the result is ~1e-38 instead of 0. NaN stays NaN. */
static inline ft__vf ft__vexp(ft__vf x) {
    ft__vf n, r, p;
    x = ft__vmax(ft__vset1(-87.3f), x);
    x = ft__vmin(ft__vset1(88.0f), x);
    n = ft__vround(ft__vmul(x, ft__vset1(1.44269504088896341f)));
    r = ft__vfma(n, ft__vset1(-0.693359375f), x);
    r = ft__vfma(n, ft__vset1(2.12194440e-4f), r);
    p = ft__vset1(1.9875691500e-4f);
    p = ft__vfma(p, r, ft__vset1(1.3981999507e-3f));
    p = ft__vfma(p, r, ft__vset1(8.3334519073e-3f));
    p = ft__vfma(p, r, ft__vset1(4.1665795894e-2f));
    p = ft__vfma(p, r, ft__vset1(1.6666665459e-1f));
    p = ft__vfma(p, r, ft__vset1(5.0000001201e-1f));
    p = ft__vfma(ft__vmul(p, r), r, ft__vadd(r, ft__vset1(1.0f)));
    return ft__vldexp(p, n);
}
#endif

/* ---- scalar references ---------------------------------------------------------------------- */
FT__MAYBE_UNUSED static float ft__vec_dot_ref(int64_t n, const float *x, const float *y) {
    float s = 0; int64_t i;
    for (i = 0; i < n; i++) s += x[i] * y[i];
    return s;
}
FT__MAYBE_UNUSED static void ft__vec_axpy_ref(int64_t n, float a, const float *x, float *y) {     /* y += a x */
    int64_t i;
    for (i = 0; i < n; i++) y[i] += a * x[i];
}
FT__MAYBE_UNUSED static void ft__vec_scale_ref(int64_t n, float *y, float a, const float *x) {    /* y = a x  */
    int64_t i;
    for (i = 0; i < n; i++) y[i] = a * x[i];
}
FT__MAYBE_UNUSED static float ft__vec_sum_ref(int64_t n, const float *x) {
    float s = 0; int64_t i;
    for (i = 0; i < n; i++) s += x[i];
    return s;
}
FT__MAYBE_UNUSED static float ft__vec_max_ref(int64_t n, const float *x) {
    float m = -INFINITY; int64_t i;
    for (i = 0; i < n; i++) m = x[i] > m || x[i] != x[i] ? x[i] : m;
    return m;
}
/* y = e^(x - shift); returns sum(y) */
FT__MAYBE_UNUSED static float ft__vec_exp_ref(int64_t n, float *y, const float *x, float shift) {
    float s = 0; int64_t i;
    for (i = 0; i < n; i++) { y[i] = expf(x[i] - shift); s += y[i]; }
    return s;
}
/* sum(e^(x - shift)) */
FT__MAYBE_UNUSED static float ft__vec_expsum_ref(int64_t n, const float *x, float shift) {
    float s = 0; int64_t i;
    for (i = 0; i < n; i++) s += expf(x[i] - shift);
    return s;
}
/* y += a e^(x - shift) */
FT__MAYBE_UNUSED static void ft__vec_exp_axpy_ref(int64_t n, float a, const float *x, float shift, float *y) {
    int64_t i;
    for (i = 0; i < n; i++) y[i] += a * expf(x[i] - shift);
}
/* y = x * sigmoid(x) */
FT__MAYBE_UNUSED static void ft__vec_silu_ref(int64_t n, float *y, const float *x) {
    int64_t i;
    for (i = 0; i < n; i++) y[i] = x[i] / (1.0f + expf(-x[i]));
}

/* ---- SIMD versions ---------------------------------------------------------------------------- */
#ifdef FT__W
static float ft__vec_dot(int64_t n, const float *x, const float *y) {
    ft__vf a0 = ft__vzero(), a1 = ft__vzero(), a2 = ft__vzero(), a3 = ft__vzero();
    int64_t i = 0; float s;
    for (; i + 4 * FT__W <= n; i += 4 * FT__W) {
        a0 = ft__vfma(ft__vload(x + i), ft__vload(y + i), a0);
        a1 = ft__vfma(ft__vload(x + i + FT__W), ft__vload(y + i + FT__W), a1);
        a2 = ft__vfma(ft__vload(x + i + 2 * FT__W), ft__vload(y + i + 2 * FT__W), a2);
        a3 = ft__vfma(ft__vload(x + i + 3 * FT__W), ft__vload(y + i + 3 * FT__W), a3);
    }
    for (; i + FT__W <= n; i += FT__W) a0 = ft__vfma(ft__vload(x + i), ft__vload(y + i), a0);
    s = ft__vhsum(ft__vadd(ft__vadd(a0, a1), ft__vadd(a2, a3)));
    for (; i < n; i++) s += x[i] * y[i];
    return s;
}
static void ft__vec_axpy(int64_t n, float a, const float *x, float *y) {
    ft__vf va = ft__vset1(a); int64_t i = 0;
    for (; i + FT__W <= n; i += FT__W) ft__vstore(y + i, ft__vfma(va, ft__vload(x + i), ft__vload(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}
static void ft__vec_scale(int64_t n, float *y, float a, const float *x) {
    ft__vf va = ft__vset1(a); int64_t i = 0;
    for (; i + FT__W <= n; i += FT__W) ft__vstore(y + i, ft__vmul(va, ft__vload(x + i)));
    for (; i < n; i++) y[i] = a * x[i];
}
static float ft__vec_sum(int64_t n, const float *x) {
    ft__vf a0 = ft__vzero(); int64_t i = 0; float s;
    for (; i + FT__W <= n; i += FT__W) a0 = ft__vadd(a0, ft__vload(x + i));
    s = ft__vhsum(a0);
    for (; i < n; i++) s += x[i];
    return s;
}
static float ft__vec_max(int64_t n, const float *x) {
    int64_t i = 0; float m = -INFINITY;
    if (n >= FT__W) {
        ft__vf vm = ft__vload(x);
        for (i = FT__W; i + FT__W <= n; i += FT__W) vm = ft__vmax(vm, ft__vload(x + i));
        m = ft__vhmax(vm);
    }
    for (; i < n; i++) m = x[i] > m || x[i] != x[i] ? x[i] : m;
    return m;
}
static float ft__vec_exp(int64_t n, float *y, const float *x, float shift) {
    ft__vf vs = ft__vset1(shift), acc = ft__vzero(); int64_t i = 0; float s;
    for (; i + FT__W <= n; i += FT__W) {
        ft__vf e = ft__vexp(ft__vsub(ft__vload(x + i), vs));
        ft__vstore(y + i, e);
        acc = ft__vadd(acc, e);
    }
    s = ft__vhsum(acc);
    for (; i < n; i++) { y[i] = expf(x[i] - shift); s += y[i]; }
    return s;
}
static float ft__vec_expsum(int64_t n, const float *x, float shift) {
    ft__vf vs = ft__vset1(shift), acc = ft__vzero(); int64_t i = 0; float s;
    for (; i + FT__W <= n; i += FT__W) acc = ft__vadd(acc, ft__vexp(ft__vsub(ft__vload(x + i), vs)));
    s = ft__vhsum(acc);
    for (; i < n; i++) s += expf(x[i] - shift);
    return s;
}
static void ft__vec_exp_axpy(int64_t n, float a, const float *x, float shift, float *y) {
    ft__vf vs = ft__vset1(shift), va = ft__vset1(a); int64_t i = 0;
    for (; i + FT__W <= n; i += FT__W)
        ft__vstore(y + i, ft__vfma(va, ft__vexp(ft__vsub(ft__vload(x + i), vs)), ft__vload(y + i)));
    for (; i < n; i++) y[i] += a * expf(x[i] - shift);
}
static void ft__vec_silu(int64_t n, float *y, const float *x) {
    ft__vf one = ft__vset1(1.0f); int64_t i = 0;
    for (; i + FT__W <= n; i += FT__W) {
        ft__vf v = ft__vload(x + i);
        ft__vstore(y + i, ft__vdiv(v, ft__vadd(one, ft__vexp(ft__vsub(ft__vzero(), v)))));
    }
    for (; i < n; i++) y[i] = x[i] / (1.0f + expf(-x[i]));
}
#else
#define ft__vec_dot   ft__vec_dot_ref
#define ft__vec_axpy  ft__vec_axpy_ref
#define ft__vec_scale ft__vec_scale_ref
#define ft__vec_sum   ft__vec_sum_ref
#define ft__vec_max   ft__vec_max_ref
#define ft__vec_exp   ft__vec_exp_ref
#define ft__vec_silu  ft__vec_silu_ref
#define ft__vec_expsum   ft__vec_expsum_ref
#define ft__vec_exp_axpy ft__vec_exp_axpy_ref
#endif

/* ---- parallel loops ---------------------------------------------------------------------------
   ft__parallel(ctx, n, work, fn, arg): fn(arg, lo, hi) over a static split of [0, n); `work` is a
   rough count of flops for all n, below which the loop stays on the calling thread. */
typedef void (*ft__range_fn)(void *arg, int64_t lo, int64_t hi);
typedef struct ft__par { ft__range_fn fn; void *arg; int64_t n; } ft__par;
static void ft__par_task(void *p, int ith, int nth) {
    ft__par *pp = FT__CAST(ft__par *, p);
    int64_t lo, hi;
    ft__split(pp->n, ith, nth, &lo, &hi);
    if (lo < hi) pp->fn(pp->arg, lo, hi);
}
static void ft__parallel(ft_ctx *ctx, int64_t n, double work, ft__range_fn fn, void *arg) {
    ft__par p;
    int nth = ft__pool_size(&ctx->pool);
    if (work < 32768.0 || n < 2 || nth < 2) { if (n > 0) fn(arg, 0, n); return; }
    if (nth > n) nth = (int)n;
    p.fn = fn; p.arg = arg; p.n = n;
    ft__pool_run_n(&ctx->pool, nth, ft__par_task, &p);
}

/* ---- GEMM ------------------------------------------------------------------------------------------
   ft__gemm computes, row-major throughout,

     C (M x N, row stride ldc)  =  op(A) (M x K) * op(B) (K x N)   [ + old C when accumulate ]

     op(A) = A      A stored M x K (lda)       |  op(B) = B      B stored K x N (ldb)
           = A^T    A stored K x M (lda)       |        = B^T    B stored N x K (ldb)

   The three uses in a linear layer y = x W^T  (x: T x in, W: out x in, y: T x out):
     forward    y  = x  W^T   ft__gemm(pool, 0, 1, T,   out, in,  x,  in,  W, in,  y,  out, 0)
     input grad dx += dy W    ft__gemm(pool, 0, 0, T,   in,  out, dy, out, W, in,  dx, in,  1)
     weight grad dW += dy^T x ft__gemm(pool, 1, 0, out, in,  T,   dy, out, x, in,  dW, in,  1)

   Structure (BLIS / GotoBLAS). Per thread, on its share of C:

     for jc in [0, N) step NC:
       for pc in [0, K) step kc:                          kc = ft__gemm_kc(K) <= KC
         Bp = pack op(B)[pc : pc+kc, jc : jc+NC]          NR-wide panels, each kc x NR, k-major
         for ic in [0, M) step MC:
           Ap = pack op(A)[ic : ic+MC, pc : pc+kc]        MR-tall panels, each kc x MR, k-major (L2)
           for jr in [0, NC) step NR:                     one Bp panel, kc x NR, stays in L1 / L2
             for ir in [0, MC) step MR:
               C[ic+ir : +MR, jc+jr : +NR] (+)= Ap panel^T Bp panel      micro-kernel, in registers

   Summation order. Each C element is: for every K block in order, acc = 0; acc = fma(a_k, b_k, acc)
   for k in the block in order; C = acc (first block, no accumulate) or C = C + acc. The K blocks
   depend only on K, and every lane of the micro-kernel does the same thing whether the tile is full
   or an edge tile; so results do not depend on the thread count or on how the work is split (bit
   identical for 1, 2, ... threads).

   Threads: the tiles of C are split statically into nth contiguous ranges along M (MR rows) or N
   (NR columns), whichever gives the smaller share per thread. Each thread packs what it needs
   itself (no barriers; with an M split every thread packs, and decodes, all of B).

   Scratch: each thread takes a 64-byte-aligned buffer from ft__pool_scratch(pool, ith, nfloats):
   at most KC * (MC + NC) + MR * NR floats, + NR * KC with a B decoder (AVX-512: about 7 MiB; less for
   small problems); no allocation in the steady state.

   Big C (>= FT__GEMM_STREAM_MIN_BYTES, 64-byte aligned, ldc % 16 == 0): the AVX-512 kernel writes
   the final K block with non-temporal stores (no read-for-ownership; the LM head's logits).
*/


/* ---- micro-kernel shape and cache blocking, chosen at compile time -------------------------- */
/* MR x NR: the C tile held in registers. KC: largest K block (a multiple of 256, the biggest quant
   block). MC: rows of A packed per block (L2). NC: columns of B packed per block. The AVX-512 ones
   were tuned on Sapphire Rapids (48 KiB L1d, 2 MiB L2); the others are the usual textbook sizes. */
#if !defined(FT_NO_SIMD) && defined(__AVX512F__)
#include <immintrin.h>
#define FT__GEMM_AVX512 1
#define FT__GEMM_MR 14 /* 14 x 2 zmm accumulators + 2 B vectors + 1 broadcast = 31 of 32 zmm */
#define FT__GEMM_NR 32
#ifndef FT__GEMM_KC
#define FT__GEMM_KC 768 /* one K block for K <= 768: C is written once; Bp panel (96 KiB) streams from L2 */
#endif
#ifndef FT__GEMM_MC
#define FT__GEMM_MC (14 * 24) /* Ap block 336 x 768 floats = 1 MiB in L2 (2 MiB) */
#endif
#ifndef FT__GEMM_NC
#define FT__GEMM_NC (32 * 64)
#endif
#elif !defined(FT_NO_SIMD) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define FT__GEMM_AVX2 1
#define FT__GEMM_MR 6 /* 6 x 2 ymm accumulators + 2 B vectors + 1 broadcast = 15 of 16 ymm */
#define FT__GEMM_NR 16
#define FT__GEMM_KC 256
#define FT__GEMM_MC (6 * 64)
#define FT__GEMM_NC (16 * 256)
#elif !defined(FT_NO_SIMD) && (defined(__ARM_NEON) || defined(__ARM_NEON__)) && defined(__aarch64__)
#include <arm_neon.h>
#define FT__GEMM_NEON 1
#define FT__GEMM_MR 8 /* 8 x 3 q accumulators + 3 B vectors + 2 A vectors = 29 of 32 q */
#define FT__GEMM_NR 12
#define FT__GEMM_KC 256
#define FT__GEMM_MC (8 * 48)
#define FT__GEMM_NC (12 * 256)
#else
#define FT__GEMM_MR 4
#define FT__GEMM_NR 8
#define FT__GEMM_KC 256
#define FT__GEMM_MC (4 * 64)
#define FT__GEMM_NC (8 * 256)
#endif

/* A C at least this big is not going to stay in cache: its final values are written with
   non-temporal stores (when 64-byte aligned), which halves its memory traffic. */
#ifndef FT__GEMM_STREAM_MIN_BYTES
#define FT__GEMM_STREAM_MIN_BYTES ((int64_t)64 << 20)
#endif

/* Problems with fewer multiply-adds than this run on the calling thread only. */
#define FT__GEMM_MT_MIN_WORK ((int64_t)1 << 21)

/* ---- where B comes from ---------------------------------------------------------------------- */
/* Packing reads B only through this. For transB (B = W, stored N x K, y = x W^T) a decoder may
   supply rows of W in any storage format, e.g. quantized weights decoded on the fly:

     row(src, n, k0, kc, dst):  dst[0 .. kc) = W[n][k0 .. k0+kc) as f32

   k0 is always a multiple of the K block (ft__gemm_kc: a multiple of 256 when K is, else of 32
   when K is), so a decoder sees whole quant blocks. row == NULL: data is f32 with row stride ld.
   Decoders are only supported with trans = 1. */
typedef struct ft__gemm_bsrc ft__gemm_bsrc;
struct ft__gemm_bsrc {
    const void *data; /* f32 B (or the decoder's own data)                                       */
    int64_t ld;       /* row stride of stored B, in floats (f32 only)                             */
    int trans;        /* 0: B stored K x N;  1: B stored N x K (op(B) = B^T)                      */
    void (*row)(const ft__gemm_bsrc *src, int64_t n, int64_t k0, int64_t kc, float *dst);
};

/* K block size: as even as possible, at most FT__GEMM_KC, a multiple of 256 when K is (else of 32
   when K is). Depends on K alone, which keeps the summation order independent of threads. */
static int64_t ft__gemm_kc(int64_t K) {
    int64_t nb = (K + FT__GEMM_KC - 1) / FT__GEMM_KC; /* number of K blocks */
    int64_t g = K % 256 == 0 ? 256 : K % 32 == 0 ? 32 : 1;
    int64_t kc = (K + nb - 1) / nb;
    kc = (kc + g - 1) / g * g;
    return kc < K ? kc : K;
}

/* ---- packing --------------------------------------------------------------------------------- */

#if defined(FT__GEMM_AVX512) && defined(__cplusplus) && defined(__GNUC__) && !defined(__clang__)
/* g++ 12 warns about _mm512_undefined_ps() inside its own intrinsics (GCC PR 105593) */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#if defined(FT__GEMM_AVX512)
/* In-place transpose of a 16 x 16 tile: r[i] lane j <-> r[j] lane i. */
static void ft__transpose16(__m512 r[16]) {
    __m512 t[16];
    int q, c;
    for (q = 0; q < 8; q++) { /* 32-bit interleave of row pairs */
        t[2 * q] = _mm512_unpacklo_ps(r[2 * q], r[2 * q + 1]);
        t[2 * q + 1] = _mm512_unpackhi_ps(r[2 * q], r[2 * q + 1]);
    }
    for (q = 0; q < 4; q++) { /* r[4q + c], 128-bit lane l: rows 4q..4q+3 of column 4l + c */
        __m512d a0 = _mm512_castps_pd(t[4 * q]), a1 = _mm512_castps_pd(t[4 * q + 1]);
        __m512d a2 = _mm512_castps_pd(t[4 * q + 2]), a3 = _mm512_castps_pd(t[4 * q + 3]);
        r[4 * q + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, a2));
        r[4 * q + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, a2));
        r[4 * q + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, a3));
        r[4 * q + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, a3));
    }
    for (c = 0; c < 4; c++) { /* gather the 128-bit lanes: column c, 4+c, 8+c, 12+c */
        __m512 lo0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88);      /* cols c, 8+c; quads 0,1 */
        __m512 hi0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xdd);      /* cols 4+c, 12+c         */
        __m512 lo1 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88); /* same for quads 2,3     */
        __m512 hi1 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xdd);
        t[c] = _mm512_shuffle_f32x4(lo0, lo1, 0x88);
        t[8 + c] = _mm512_shuffle_f32x4(lo0, lo1, 0xdd);
        t[4 + c] = _mm512_shuffle_f32x4(hi0, hi1, 0x88);
        t[12 + c] = _mm512_shuffle_f32x4(hi0, hi1, 0xdd);
    }
    for (q = 0; q < 16; q++) r[q] = t[q];
}
#endif

/* Transposing pack: dst[k * width + j] = rows[j][k] for k < kc, j < nrows; 0 for nrows <= j < width.
   Packs A (non-transposed, width MR) and B (transposed, width NR). dst is kc x width. */
static void ft__gemm_pack_rows(float *dst, int64_t width, const float *const *rows, int64_t nrows,
                               int64_t kc) {
#if defined(FT__GEMM_AVX512)
    int64_t j0, k0;
    for (j0 = 0; j0 < width; j0 += 16) { /* 16 x 16 tiles, transposed in registers */
        int64_t jn = width - j0 < 16 ? width - j0 : 16;
        __mmask16 smask = (__mmask16)((1u << jn) - 1);
        for (k0 = 0; k0 < kc; k0 += 16) {
            int64_t kn = kc - k0 < 16 ? kc - k0 : 16, t;
            __mmask16 lmask = (__mmask16)((1u << kn) - 1);
            __m512 r[16];
            for (t = 0; t < 16 && j0 + t < nrows; t++) /* rows may come from DRAM (big W) */
                _mm_prefetch((const char *)(rows[j0 + t] + k0 + 64), _MM_HINT_T0);
            for (t = 0; t < 16; t++)
                r[t] = j0 + t < nrows ? _mm512_maskz_loadu_ps(lmask, rows[j0 + t] + k0)
                                      : _mm512_setzero_ps();
            ft__transpose16(r);
            for (t = 0; t < kn; t++) _mm512_mask_storeu_ps(dst + (k0 + t) * width + j0, smask, r[t]);
        }
    }
#else
    int64_t k0, j, k;
    for (k0 = 0; k0 < kc; k0 += 16) { /* 16 k at a time: reads one cache line per row */
        int64_t kn = kc - k0 < 16 ? kc - k0 : 16;
        for (j = 0; j < width; j++) {
            const float *r = j < nrows ? rows[j] + k0 : NULL;
            for (k = 0; k < kn; k++) dst[(k0 + k) * width + j] = r ? r[k] : 0.0f;
        }
    }
#endif
}

/* Copying pack: dst[k * width + j] = src[k * ld + j] for j < n; 0 for n <= j < width. dst is kc x width.
   Packs A (transposed, stored K x M) and B (stored K x N). */
static void ft__gemm_pack_cols(float *dst, int64_t width, const float *src, int64_t ld, int64_t n,
                               int64_t kc) {
    int64_t k, j;
#if defined(FT__GEMM_AVX512)
    for (j = 0; j < width; j += 16) { /* 16 columns at a time: the valid ones loaded, zeros after */
        int64_t jw = width - j < 16 ? width - j : 16, jn = n - j < 0 ? 0 : n - j < 16 ? n - j : 16;
        __mmask16 smask = (__mmask16)((1u << jw) - 1), lmask = (__mmask16)((1u << jn) - 1);
        for (k = 0; k < kc; k++)
            _mm512_mask_storeu_ps(dst + k * width + j, smask, _mm512_maskz_loadu_ps(lmask, src + k * ld + j));
    }
#else
    for (k = 0; k < kc; k++) {
        const float *s = src + k * ld;
        float *d = dst + k * width;
        for (j = 0; j < n; j++) d[j] = s[j];
        for (; j < width; j++) d[j] = 0.0f;
    }
#endif
}

/* Edge tile: C[0:mr, 0:nr] (row stride ldc) = tile[0:mr, 0:nr] (row stride NR) [+ C when accumulate] */
static void ft__gemm_store_edge(float *C, int64_t ldc, const float *tile, int64_t mr, int64_t nr, int accumulate) {
    int64_t i, j;
#if defined(FT__GEMM_AVX512)
    for (j = 0; j < nr; j += 16) {
        __mmask16 mask = (__mmask16)((1u << (nr - j < 16 ? nr - j : 16)) - 1);
        for (i = 0; i < mr; i++) {
            __m512 t = _mm512_maskz_loadu_ps(mask, tile + i * FT__GEMM_NR + j);
            if (accumulate) t = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, C + i * ldc + j), t);
            _mm512_mask_storeu_ps(C + i * ldc + j, mask, t);
        }
    }
#else
    for (i = 0; i < mr; i++)
        for (j = 0; j < nr; j++)
            C[i * ldc + j] = accumulate ? C[i * ldc + j] + tile[i * FT__GEMM_NR + j] : tile[i * FT__GEMM_NR + j];
#endif
}

#if defined(FT__GEMM_AVX512) && defined(__cplusplus) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

/* Ap = op(A)[m0 : m0+mc, k0 : k0+kc] as ceil(mc / MR) panels of kc x MR. */
static void ft__gemm_pack_a(float *Ap, int transA, const float *A, int64_t lda, int64_t m0,
                            int64_t mc, int64_t k0, int64_t kc) {
    int64_t i, p;
    for (p = 0; p < mc; p += FT__GEMM_MR) {
        int64_t mr = mc - p < FT__GEMM_MR ? mc - p : FT__GEMM_MR;
        float *dst = Ap + p * kc; /* panel p / MR */
        if (transA) { /* A stored K x M: each k is a contiguous run of mr */
            ft__gemm_pack_cols(dst, FT__GEMM_MR, A + k0 * lda + m0 + p, lda, mr, kc);
        } else { /* A stored M x K: gather mr rows */
            const float *rows[FT__GEMM_MR];
            for (i = 0; i < mr; i++) rows[i] = A + (m0 + p + i) * lda + k0;
            ft__gemm_pack_rows(dst, FT__GEMM_MR, rows, mr, kc);
        }
    }
}

/* Bp = op(B)[k0 : k0+kc, n0 : n0+nc] as ceil(nc / NR) panels of kc x NR.
   tmp: NR * kc floats for decoded rows (only used when B->row != NULL). */
static void ft__gemm_pack_b(float *Bp, const ft__gemm_bsrc *B, int64_t n0, int64_t nc, int64_t k0,
                            int64_t kc, float *tmp) {
    const float *data = (const float *)B->data;
    int64_t j, p;
    for (p = 0; p < nc; p += FT__GEMM_NR) {
        int64_t nr = nc - p < FT__GEMM_NR ? nc - p : FT__GEMM_NR;
        float *dst = Bp + p * kc; /* panel p / NR */
        if (B->trans) { /* W stored N x K: rows n0+p .. n0+p+nr of W, columns k0 .. k0+kc */
            const float *rows[FT__GEMM_NR];
            for (j = 0; j < nr; j++) {
                if (B->row) {
                    B->row(B, n0 + p + j, k0, kc, tmp + j * kc);
                    rows[j] = tmp + j * kc;
                } else {
                    rows[j] = data + (n0 + p + j) * B->ld + k0;
                }
            }
            ft__gemm_pack_rows(dst, FT__GEMM_NR, rows, nr, kc);
        } else { /* B stored K x N: each k is a contiguous run of nr */
            ft__gemm_pack_cols(dst, FT__GEMM_NR, data + k0 * B->ld + n0 + p, B->ld, nr, kc);
        }
    }
}

/* ---- micro-kernels ---------------------------------------------------------------------------- */
/* C[0:MR, 0:NR] (row stride ldc) = Ap^T Bp [+ C when accumulate]. stream: a hint that C is
   64-byte aligned and should bypass the caches (non-temporal stores; kernels may ignore it).
   Ap: kc x MR (k-major), Bp: kc x NR (k-major, 64-byte aligned). Accumulates from zero over k in
   order, then adds the old C once. */

#if defined(FT__GEMM_AVX512)
/* 14 x 32: per k, 2 vector loads of B, 14 broadcasts of A, 28 FMAs. */
#define FT__ROWS14(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13)
static void ft__gemm_kernel(int64_t kc, const float *Ap, const float *Bp, float *C, int64_t ldc,
                            int accumulate, int stream) {
#define FT__ZERO(i) __m512 c##i##a = _mm512_setzero_ps(), c##i##b = _mm512_setzero_ps();
#define FT__FMA(i)                                                                                   \
    {                                                                                                \
        __m512 a = _mm512_set1_ps(Ap[i]);                                                           \
        c##i##a = _mm512_fmadd_ps(a, b0, c##i##a);                                                  \
        c##i##b = _mm512_fmadd_ps(a, b1, c##i##b);                                                  \
    }
#define FT__STORE(i)                                                                                 \
    {                                                                                                \
        float *c = C + (i) * ldc;                                                                   \
        if (accumulate) {                                                                            \
            c##i##a = _mm512_add_ps(c##i##a, _mm512_loadu_ps(c));                                   \
            c##i##b = _mm512_add_ps(c##i##b, _mm512_loadu_ps(c + 16));                              \
        }                                                                                            \
        if (stream) { /* C is 64-byte aligned and too big to stay cached: skip the read-for-ownership */ \
            _mm512_stream_ps(c, c##i##a);                                                           \
            _mm512_stream_ps(c + 16, c##i##b);                                                      \
        } else {                                                                                     \
            _mm512_storeu_ps(c, c##i##a);                                                           \
            _mm512_storeu_ps(c + 16, c##i##b);                                                      \
        }                                                                                            \
    }
    int64_t k;
    FT__ROWS14(FT__ZERO)
    /* The first MR steps also prefetch one row of C each: when C is far (big N) it is in L1 by
       the time it is stored, without flooding the line-fill buffers at once. */
    for (k = 0; k < kc && k < FT__GEMM_MR; k++) {
        __m512 b0 = _mm512_load_ps(Bp), b1 = _mm512_load_ps(Bp + 16);
        if (!stream) {
            _mm_prefetch((const char *)(C + k * ldc), _MM_HINT_T0);
            _mm_prefetch((const char *)(C + k * ldc + 16), _MM_HINT_T0);
        }
        FT__ROWS14(FT__FMA)
        Ap += FT__GEMM_MR;
        Bp += FT__GEMM_NR;
    }
    for (; k < kc; k++) {
        __m512 b0 = _mm512_load_ps(Bp), b1 = _mm512_load_ps(Bp + 16);
        FT__ROWS14(FT__FMA)
        Ap += FT__GEMM_MR;
        Bp += FT__GEMM_NR;
    }
    FT__ROWS14(FT__STORE)
#undef FT__ZERO
#undef FT__FMA
#undef FT__STORE
}

#elif defined(FT__GEMM_AVX2)
/* 6 x 16: per k, 2 vector loads of B, 6 broadcasts of A, 12 FMAs. */
#define FT__ROWS6(X) X(0) X(1) X(2) X(3) X(4) X(5)
static void ft__gemm_kernel(int64_t kc, const float *Ap, const float *Bp, float *C, int64_t ldc,
                            int accumulate, int stream) {
#define FT__ZERO(i) __m256 c##i##a = _mm256_setzero_ps(), c##i##b = _mm256_setzero_ps();
#define FT__FMA(i)                                                                                   \
    {                                                                                                \
        __m256 a = _mm256_broadcast_ss(Ap + (i));                                                   \
        c##i##a = _mm256_fmadd_ps(a, b0, c##i##a);                                                  \
        c##i##b = _mm256_fmadd_ps(a, b1, c##i##b);                                                  \
    }
#define FT__STORE(i)                                                                                 \
    {                                                                                                \
        float *c = C + (i) * ldc;                                                                   \
        if (accumulate) {                                                                            \
            c##i##a = _mm256_add_ps(c##i##a, _mm256_loadu_ps(c));                                   \
            c##i##b = _mm256_add_ps(c##i##b, _mm256_loadu_ps(c + 8));                               \
        }                                                                                            \
        _mm256_storeu_ps(c, c##i##a);                                                               \
        _mm256_storeu_ps(c + 8, c##i##b);                                                           \
    }
    int64_t k;
    (void)stream;
    FT__ROWS6(FT__ZERO)
    for (k = 0; k < kc; k++) {
        __m256 b0 = _mm256_load_ps(Bp), b1 = _mm256_load_ps(Bp + 8);
        FT__ROWS6(FT__FMA)
        Ap += FT__GEMM_MR;
        Bp += FT__GEMM_NR;
    }
    FT__ROWS6(FT__STORE)
#undef FT__ZERO
#undef FT__FMA
#undef FT__STORE
}

#elif defined(FT__GEMM_NEON)
/* 8 x 12: per k, 3 vector loads of B, 2 of A, 24 FMAs by lane. */
#define FT__ROWS8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
static void ft__gemm_kernel(int64_t kc, const float *Ap, const float *Bp, float *C, int64_t ldc,
                            int accumulate, int stream) {
#define FT__ZERO(i) float32x4_t c##i##a = vdupq_n_f32(0.0f), c##i##b = c##i##a, c##i##c = c##i##a;
#define FT__FMA(i)                                                                                   \
    {                                                                                                \
        c##i##a = vfmaq_laneq_f32(c##i##a, b0, (i) < 4 ? a0 : a1, (i) & 3);                         \
        c##i##b = vfmaq_laneq_f32(c##i##b, b1, (i) < 4 ? a0 : a1, (i) & 3);                         \
        c##i##c = vfmaq_laneq_f32(c##i##c, b2, (i) < 4 ? a0 : a1, (i) & 3);                         \
    }
#define FT__STORE(i)                                                                                 \
    {                                                                                                \
        float *c = C + (i) * ldc;                                                                   \
        if (accumulate) {                                                                            \
            c##i##a = vaddq_f32(c##i##a, vld1q_f32(c));                                             \
            c##i##b = vaddq_f32(c##i##b, vld1q_f32(c + 4));                                         \
            c##i##c = vaddq_f32(c##i##c, vld1q_f32(c + 8));                                         \
        }                                                                                            \
        vst1q_f32(c, c##i##a);                                                                      \
        vst1q_f32(c + 4, c##i##b);                                                                  \
        vst1q_f32(c + 8, c##i##c);                                                                  \
    }
    int64_t k;
    (void)stream;
    FT__ROWS8(FT__ZERO)
    for (k = 0; k < kc; k++) {
        float32x4_t a0 = vld1q_f32(Ap), a1 = vld1q_f32(Ap + 4);
        float32x4_t b0 = vld1q_f32(Bp), b1 = vld1q_f32(Bp + 4), b2 = vld1q_f32(Bp + 8);
        FT__ROWS8(FT__FMA)
        Ap += FT__GEMM_MR;
        Bp += FT__GEMM_NR;
    }
    FT__ROWS8(FT__STORE)
#undef FT__ZERO
#undef FT__FMA
#undef FT__STORE
}

#else
/* Scalar MR x NR; the accumulator tile is small enough for the compiler to keep in registers. */
static void ft__gemm_kernel(int64_t kc, const float *Ap, const float *Bp, float *C, int64_t ldc,
                            int accumulate, int stream) {
    float acc[FT__GEMM_MR][FT__GEMM_NR];
    int64_t k;
    int i, j;
    (void)stream;
    for (i = 0; i < FT__GEMM_MR; i++)
        for (j = 0; j < FT__GEMM_NR; j++) acc[i][j] = 0.0f;
    for (k = 0; k < kc; k++, Ap += FT__GEMM_MR, Bp += FT__GEMM_NR)
        for (i = 0; i < FT__GEMM_MR; i++)
            for (j = 0; j < FT__GEMM_NR; j++) acc[i][j] += Ap[i] * Bp[j];
    for (i = 0; i < FT__GEMM_MR; i++)
        for (j = 0; j < FT__GEMM_NR; j++)
            C[i * ldc + j] = accumulate ? acc[i][j] + C[i * ldc + j] : acc[i][j];
}
#endif

/* ---- driver ----------------------------------------------------------------------------------- */

typedef struct ft__gemm_job {
    int transA;
    int64_t M, N, K;
    const float *A;
    int64_t lda;
    const ft__gemm_bsrc *B;
    float *C;
    int64_t ldc;
    int accumulate;
    int64_t kc;   /* K block: ft__gemm_kc(K) */
    int split_n;  /* threads split the N tiles (1) or the M tiles (0) */
    int stream;   /* C is big and 64-byte aligned: write its last K block with non-temporal stores */
    ft__pool *pool;
} ft__gemm_job;

static int64_t ft__gemm_min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t ft__gemm_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/* C[m0:m1, n0:n1] of the job, on one thread. buf: scratch as sized in ft__gemm_task. */
static void ft__gemm_block(const ft__gemm_job *job, int64_t m0, int64_t m1, int64_t n0, int64_t n1,
                           float *buf) {
    const int64_t MR = FT__GEMM_MR, NR = FT__GEMM_NR, K = job->K, KC = job->kc, ldc = job->ldc;
    const int stream = job->stream;
    const int64_t mcmax = ft__gemm_min64(FT__GEMM_MC, ft__gemm_up(m1 - m0, MR));
    const int64_t ncmax = ft__gemm_min64(FT__GEMM_NC, ft__gemm_up(n1 - n0, NR));
    float *Bp = buf;                  /* KC x ncmax */
    float *Ap = Bp + KC * ncmax;      /* KC x mcmax */
    float *tile = Ap + KC * mcmax;    /* MR x NR, for edge tiles */
    float *tmp = tile + MR * NR;      /* NR x KC, decoded rows of B */
    int64_t jc, pc, ic, jr, ir;
    for (jc = n0; jc < n1; jc += FT__GEMM_NC) {
        int64_t nc = ft__gemm_min64(FT__GEMM_NC, n1 - jc);
        for (pc = 0; pc < K; pc += KC) {
            int64_t kc = ft__gemm_min64(KC, K - pc);
            int acc = job->accumulate || pc > 0; /* later K blocks add to C */
            ft__gemm_pack_b(Bp, job->B, jc, nc, pc, kc, tmp);
            for (ic = m0; ic < m1; ic += FT__GEMM_MC) {
                int64_t mc = ft__gemm_min64(FT__GEMM_MC, m1 - ic);
                ft__gemm_pack_a(Ap, job->transA, job->A, job->lda, ic, mc, pc, kc);
                for (jr = 0; jr < nc; jr += NR) {
                    int64_t nr = ft__gemm_min64(NR, nc - jr);
                    const float *bp = Bp + jr * kc;
                    for (ir = 0; ir < mc; ir += MR) {
                        int64_t mr = ft__gemm_min64(MR, mc - ir);
                        const float *ap = Ap + ir * kc;
                        float *c = job->C + (ic + ir) * ldc + jc + jr;
                        if (mr == MR && nr == NR) {
                            ft__gemm_kernel(kc, ap, bp, c, ldc, acc, stream && pc + kc == K);
                        } else { /* edge tile: full tile into `tile`, then the valid part */
                            ft__gemm_kernel(kc, ap, bp, tile, NR, 0, 0);
                            ft__gemm_store_edge(c, ldc, tile, mr, nr, acc);
                        }
                    }
                }
            }
        }
    }
#if defined(FT__GEMM_AVX512)
    if (stream) _mm_sfence(); /* order the non-temporal stores before the pool's join */
#endif
}

/* C[m0:m1, n0:n1] of the job on thread ith, in that thread's pool scratch (sized here). */
static void ft__gemm_run_block(const ft__gemm_job *job, int ith, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    int64_t mcmax = ft__gemm_min64(FT__GEMM_MC, ft__gemm_up(m1 - m0, FT__GEMM_MR));
    int64_t ncmax = ft__gemm_min64(FT__GEMM_NC, ft__gemm_up(n1 - n0, FT__GEMM_NR));
    size_t need = (size_t)(job->kc * (ncmax + mcmax) + FT__GEMM_MR * FT__GEMM_NR + (job->B->row ? FT__GEMM_NR * job->kc : 0));
    void *own = NULL;
    float *buf = ft__pool_scratch(job->pool, ith, need);
    if (!buf) { /* no pool (or it could not grow): allocate for this call */
        own = FT_MALLOC(need * sizeof(float) + 64);
        FT_ASSERT(own != NULL);
        if (!own) return;
        buf = (float *)(((uintptr_t)own + 63) & ~(uintptr_t)63);
    }
    ft__gemm_block(job, m0, m1, n0, n1, buf);
    if (own) FT_FREE(own);
}

/* Task for ft__pool_run: thread ith takes tiles [ntiles * ith / nth, ntiles * (ith+1) / nth). */
static void ft__gemm_task(void *arg, int ith, int nth) {
    const ft__gemm_job *job = (const ft__gemm_job *)arg;
    const int64_t MR = FT__GEMM_MR, NR = FT__GEMM_NR;
    int64_t T = job->split_n ? (job->N + NR - 1) / NR : (job->M + MR - 1) / MR;
    int64_t t0 = T * ith / nth, t1 = T * (ith + 1) / nth;
    int64_t m0 = 0, m1 = job->M, n0 = 0, n1 = job->N;
    if (t0 >= t1) return;
    if (job->split_n) {
        n0 = t0 * NR;
        n1 = ft__gemm_min64(job->N, t1 * NR);
    } else {
        m0 = t0 * MR;
        m1 = ft__gemm_min64(job->M, t1 * MR);
    }
    ft__gemm_run_block(job, ith, m0, m1, n0, n1);
}

/* Fills job for C (M x N) = op(A) op(B) [+ C]. Returns 0 when there is nothing to multiply (M, N
   or K empty; C was zeroed for K == 0 without accumulate). The thread split is left to the caller. */
static int ft__gemm_job_init(ft__gemm_job *job, ft__pool *pool, int transA, int64_t M, int64_t N, int64_t K,
                             const float *A, int64_t lda, const ft__gemm_bsrc *B, float *C, int64_t ldc,
                             int accumulate) {
    int64_t i, j;
    if (M <= 0 || N <= 0) return 0;
    if (K <= 0) { /* empty sum */
        if (!accumulate)
            for (i = 0; i < M; i++)
                for (j = 0; j < N; j++) C[i * ldc + j] = 0.0f;
        return 0;
    }
    FT_ASSERT(B->trans || !B->row);
    job->transA = transA;
    job->M = M;
    job->N = N;
    job->K = K;
    job->A = A;
    job->lda = lda;
    job->B = B;
    job->C = C;
    job->ldc = ldc;
    job->accumulate = accumulate;
    job->kc = ft__gemm_kc(K);
    job->split_n = 0;
    job->stream = M * N * (int64_t)sizeof(float) >= FT__GEMM_STREAM_MIN_BYTES && ldc % 16 == 0 &&
                  (uintptr_t)C % 64 == 0;
    job->pool = pool;
    return 1;
}

/* C (M x N) = op(A) (M x K) * op(B) (K x N) [+ C], with B read through a ft__gemm_bsrc. */
static void ft__gemm_src(ft__pool *pool, int transA, int64_t M, int64_t N, int64_t K,
                         const float *A, int64_t lda, const ft__gemm_bsrc *B, float *C, int64_t ldc,
                         int accumulate) {
    ft__gemm_job job;
    if (!ft__gemm_job_init(&job, pool, transA, M, N, K, A, lda, B, C, ldc, accumulate)) return;
    { /* split the dimension that gives the smallest share per thread (tiles are padded) */
        int64_t nth = ft__pool_size(pool), Tm = (M + FT__GEMM_MR - 1) / FT__GEMM_MR;
        int64_t Tn = (N + FT__GEMM_NR - 1) / FT__GEMM_NR;
        int64_t wm = (Tm + nth - 1) / nth * FT__GEMM_MR * Tn * FT__GEMM_NR; /* split M: rows x all cols */
        int64_t wn = (Tn + nth - 1) / nth * FT__GEMM_NR * Tm * FT__GEMM_MR; /* split N */
        job.split_n = wn < wm || (wn == wm && Tn > Tm);
    }
    if (ft__pool_size(pool) > 1 && M * N * K >= FT__GEMM_MT_MIN_WORK)
        ft__pool_run(pool, ft__gemm_task, &job);
    else
        ft__gemm_task(&job, 0, 1);
}

static void ft__gemm_bsrc_f32(ft__gemm_bsrc *src, const float *B, int64_t ldb, int transB) {
    src->data = B;
    src->ld = ldb;
    src->trans = transB;
    src->row = NULL;
}

/* C (M x N) = op(A) (M x K) * op(B) (K x N) [+ C]; see the top of this section. */
static void ft__gemm(ft__pool *pool, int transA, int transB, int64_t M, int64_t N, int64_t K,
                     const float *A, int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc,
                     int accumulate) {
    ft__gemm_bsrc src;
    ft__gemm_bsrc_f32(&src, B, ldb, transB);
    ft__gemm_src(pool, transA, M, N, K, A, lda, &src, C, ldc, accumulate);
}

/* The same GEMM all on the calling thread, thread ith of a task that pool is running (its
   scratch is free): for small products inside a pool task, which must not re-enter the pool. */
static void ft__gemm_on_thread(ft__pool *pool, int ith, int transA, int transB, int64_t M, int64_t N, int64_t K,
                               const float *A, int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc,
                               int accumulate) {
    ft__gemm_bsrc src; ft__gemm_job job;
    ft__gemm_bsrc_f32(&src, B, ldb, transB);
    if (ft__gemm_job_init(&job, pool, transA, M, N, K, A, lda, &src, C, ldc, accumulate))
        ft__gemm_run_block(&job, ith, 0, M, 0, N);
}

/* Reference: plain triple loop, summed in double. Same arguments as ft__gemm minus the pool. */
static void ft__gemm_ref(int transA, int transB, int64_t M, int64_t N, int64_t K, const float *A,
                         int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc,
                         int accumulate) {
    int64_t i, j, k;
    for (i = 0; i < M; i++)
        for (j = 0; j < N; j++) {
            double s = accumulate ? (double)C[i * ldc + j] : 0.0;
            for (k = 0; k < K; k++) {
                float a = transA ? A[k * lda + i] : A[i * lda + k];
                float b = transB ? B[j * ldb + k] : B[k * ldb + j];
                s += (double)a * (double)b;
            }
            C[i * ldc + j] = (float)s;
        }
}


FT_API void ft_gemm(ft_ctx *ctx, int ta, int tb, int64_t M, int64_t N, int64_t K,
                    const float *A, int64_t lda, const float *B, int64_t ldb,
                    float *C, int64_t ldc, int accumulate) {
    ft__gemm(&ctx->pool, ta, tb, M, N, K, A, lda, B, ldb, C, ldc, accumulate);
}
FT_API void ft_gemm_ref(int ta, int tb, int64_t M, int64_t N, int64_t K,
                        const float *A, int64_t lda, const float *B, int64_t ldb,
                        float *C, int64_t ldc, int accumulate) {
    ft__gemm_ref(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, accumulate);
}

/* ---- skinny products (the low-rank side of LoRA) -----------------------------------------------
   With r (the rank, 4..64) as the short side the GEMM would pack a big operand only to use each
   packed element r times; these read the big operand once, in place:
     ft__skinny_dot   Y (r, N) = s A X^T          A (r, K), X (N, K) row stride ldx: r dots per row
     ft__skinny_acc   C (r, K) += V X             V (r, N), X (N, K) row stride ldx: r rank-1
                      updates per row; C[k, c] at C + k cs_r + c cs_c (cs_r = 1: stored transposed)
   Blocks of 8 of the r rows: 8 x 2 vector accumulators. Dots split the N rows over threads, the
   updates split the K columns: each output is summed in one fixed order whatever the threads. */
#define FT__SK_R 8
typedef struct ft__skinny { int64_t r, N, K, ldx, cs_r, cs_c; const float *A, *X, *V; float *Y, *C; float s; } ft__skinny;
static void ft__skinny_dot_rows(void *p, int64_t p0, int64_t p1) {     /* row pairs [p0, p1) */
    const ft__skinny *j = FT__CAST(const ft__skinny *, p);
    int64_t n, k0, k, c, K = j->K, n1 = FT__MIN(j->N, 2 * p1);
    for (n = 2 * p0; n < n1; n += 2) {
        int two = n + 1 < n1;
        const float *x0 = j->X + n * j->ldx, *x1 = two ? x0 + j->ldx : x0;
        for (k0 = 0; k0 < j->r; k0 += FT__SK_R) {
            int64_t kn = FT__MIN(FT__SK_R, j->r - k0);
            float s0[FT__SK_R], s1[FT__SK_R];
            c = 0;
#ifdef FT__W
            {
                ft__vf a0[FT__SK_R], a1[FT__SK_R];
                for (k = 0; k < FT__SK_R; k++) { a0[k] = ft__vzero(); a1[k] = ft__vzero(); }
                for (; c + FT__W <= K; c += FT__W) {
                    ft__vf v0 = ft__vload(x0 + c), v1 = ft__vload(x1 + c);
                    for (k = 0; k < kn; k++) {
                        ft__vf w = ft__vload(j->A + (k0 + k) * K + c);
                        a0[k] = ft__vfma(w, v0, a0[k]); a1[k] = ft__vfma(w, v1, a1[k]);
                    }
                }
                for (k = 0; k < kn; k++) { s0[k] = ft__vhsum(a0[k]); s1[k] = ft__vhsum(a1[k]); }
            }
#else
            for (k = 0; k < kn; k++) s0[k] = s1[k] = 0;
#endif
            for (k = 0; k < kn; k++) {
                const float *w = j->A + (k0 + k) * K; int64_t i;
                for (i = c; i < K; i++) { s0[k] += w[i] * x0[i]; s1[k] += w[i] * x1[i]; }
                j->Y[(k0 + k) * j->N + n] = j->s * s0[k];
                if (two) j->Y[(k0 + k) * j->N + n + 1] = j->s * s1[k];
            }
        }
    }
}
#ifdef FT__W
#define FT__SK_COLS (2 * FT__W)                 /* a column tile: two vectors */
#else
#define FT__SK_COLS 16
#endif
static void ft__skinny_acc_cols(void *p, int64_t t0, int64_t t1) {      /* column tiles [t0, t1) */
    const ft__skinny *j = FT__CAST(const ft__skinny *, p);
    int64_t t, n, k0, k, c;
    for (t = t0; t < t1; t++) {
        int64_t c0 = t * FT__SK_COLS, cn = FT__MIN(FT__SK_COLS, j->K - c0);
        for (k0 = 0; k0 < j->r; k0 += FT__SK_R) {
            int64_t kn = FT__MIN(FT__SK_R, j->r - k0);
            float acc[FT__SK_R][FT__SK_COLS];
#ifdef FT__W
            if (cn == FT__SK_COLS) {
                ft__vf a0[FT__SK_R], a1[FT__SK_R];
                for (k = 0; k < FT__SK_R; k++) { a0[k] = ft__vzero(); a1[k] = ft__vzero(); }
                for (n = 0; n < j->N; n++) {
                    const float *x = j->X + n * j->ldx + c0;
                    ft__vf v0 = ft__vload(x), v1 = ft__vload(x + FT__W);
                    FT__PREFETCH(x + 16 * j->ldx); FT__PREFETCH(x + 16 * j->ldx + FT__SK_COLS - 1);   /* rows a page apart */
                    for (k = 0; k < kn; k++) {
                        ft__vf w = ft__vset1(j->V[(k0 + k) * j->N + n]);
                        a0[k] = ft__vfma(w, v0, a0[k]); a1[k] = ft__vfma(w, v1, a1[k]);
                    }
                }
                for (k = 0; k < kn; k++) { ft__vstore(acc[k], a0[k]); ft__vstore(acc[k] + FT__W, a1[k]); }
            } else
#endif
            {
                memset(acc, 0, sizeof acc);
                for (n = 0; n < j->N; n++)
                    for (k = 0; k < kn; k++) {
                        float w = j->V[(k0 + k) * j->N + n];
                        for (c = 0; c < cn; c++) acc[k][c] += w * j->X[n * j->ldx + c0 + c];
                    }
            }
            for (k = 0; k < kn; k++)
                for (c = 0; c < cn; c++) j->C[(k0 + k) * j->cs_r + (c0 + c) * j->cs_c] += acc[k][c];
        }
    }
}
static void ft__skinny_dot(ft_ctx *ctx, int64_t r, int64_t N, int64_t K, float s, const float *A,
                           const float *X, int64_t ldx, float *Y) {
    ft__skinny j;
    memset(&j, 0, sizeof j);
    j.r = r; j.N = N; j.K = K; j.s = s; j.A = A; j.X = X; j.ldx = ldx; j.Y = Y;
    ft__parallel(ctx, (N + 1) / 2, 2.0 * (double)(r * N * K), ft__skinny_dot_rows, &j);
}
static void ft__skinny_acc(ft_ctx *ctx, int64_t r, int64_t N, int64_t K, const float *V, const float *X,
                           int64_t ldx, float *C, int64_t cs_r, int64_t cs_c) {
    ft__skinny j;
    memset(&j, 0, sizeof j);
    j.r = r; j.N = N; j.K = K; j.V = V; j.X = X; j.ldx = ldx; j.C = C; j.cs_r = cs_r; j.cs_c = cs_c;
    ft__parallel(ctx, (K + FT__SK_COLS - 1) / FT__SK_COLS, 2.0 * (double)(r * N * K), ft__skinny_acc_cols, &j);
}

/* ---- row kernels ------------------------------------------------------------------------------
   Shapes: N rows of C channels unless stated. Backward kernels ACCUMULATE into d* buffers. */

/* x (N, C), w (C) or NULL -> y (N, C), rstd (N) */
static void ft__rmsnorm_forward(float *y, float *rstd, const float *x, const float *w,
                                int64_t N, int64_t C, float eps) {
    int64_t i, j;
    for (i = 0; i < N; i++) {
        const float *xr = x + i * C; float *yr = y + i * C;
        float r = 1.0f / sqrtf(ft__vec_dot(C, xr, xr) / (float)C + eps);
        rstd[i] = r;
        if (w) for (j = 0; j < C; j++) yr[j] = xr[j] * r * w[j];
        else ft__vec_scale(C, yr, r, xr);
    }
}
/* dx (N, C) += rstd (g - x rstd^2 mean(g x)) with g = dy * w;  dw (C) += sum_rows dy x rstd.
   Either of dx, dw may be NULL (the op runs dx over threads and dw in one ordered pass). */
static void ft__rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x,
                                 const float *w, const float *rstd, int64_t N, int64_t C) {
    int64_t i, j;
    for (i = 0; i < N; i++) {
        const float *xr = x + i * C, *dyr = dy + i * C; float r = rstd[i], c = 0;
        if (dw) for (j = 0; j < C; j++) dw[j] += dyr[j] * xr[j] * r;
        if (!dx) continue;
        for (j = 0; j < C; j++) c += dyr[j] * (w ? w[j] : 1.0f) * xr[j];
        c *= r * r / (float)C;
        for (j = 0; j < C; j++) dx[i * C + j] += r * (dyr[j] * (w ? w[j] : 1.0f) - xr[j] * c);
    }
}

/* x (N, C), w, b (C) or NULL -> y (N, C), mean (N), rstd (N) */
static void ft__layernorm_forward(float *y, float *mean, float *rstd, const float *x,
                                  const float *w, const float *b, int64_t N, int64_t C, float eps) {
    int64_t i, j;
    for (i = 0; i < N; i++) {
        const float *xr = x + i * C; float *yr = y + i * C;
        float m = ft__vec_sum(C, xr) / (float)C, v = 0, r;
        for (j = 0; j < C; j++) v += (xr[j] - m) * (xr[j] - m);
        r = 1.0f / sqrtf(v / (float)C + eps);
        mean[i] = m; rstd[i] = r;
        for (j = 0; j < C; j++) yr[j] = (xr[j] - m) * r * (w ? w[j] : 1.0f) + (b ? b[j] : 0.0f);
    }
}
static void ft__layernorm_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                                   const float *w, const float *mean, const float *rstd,
                                   int64_t N, int64_t C) {
    int64_t i, j;
    for (i = 0; i < N; i++) {
        const float *xr = x + i * C, *dyr = dy + i * C;
        float m = mean[i], r = rstd[i], sg = 0, sgx = 0;
        for (j = 0; j < C; j++) {
            float xh = (xr[j] - m) * r, g = dyr[j] * (w ? w[j] : 1.0f);
            sg += g; sgx += g * xh;
            if (dw) dw[j] += dyr[j] * xh;
            if (db) db[j] += dyr[j];
        }
        sg /= (float)C; sgx /= (float)C;
        if (dx) for (j = 0; j < C; j++) {
            float xh = (xr[j] - m) * r, g = dyr[j] * (w ? w[j] : 1.0f);
            dx[i * C + j] += r * (g - sg - xh * sgx);
        }
    }
}

/* YaRN's correction range [lo, hi] of pair indices (ggml_rope_yarn_corr_dims): the pair whose
   wavelength fits n_ctx_orig / beta times, rounded outwards and clamped to the dims */
static void ft__rope_yarn_range(const ft_rope_opts *o, float range[2]) {
    const float two_pi = 6.28318530718f;
    float lo = (float)o->n_rot * logf((float)o->n_ctx_orig / (o->beta_fast * two_pi)) / (2.0f * logf(o->base));
    float hi = (float)o->n_rot * logf((float)o->n_ctx_orig / (o->beta_slow * two_pi)) / (2.0f * logf(o->base));
    range[0] = FT__MAX(0.0f, floorf(lo));
    range[1] = FT__MIN((float)(o->n_rot - 1), ceilf(hi));
}
/* the angles (ft_rope_ext's formula; o has its defaults filled in): cs (N, n_rot/2, 2) =
   attn_factor cos, attn_factor sin of theta, rows [lo, hi) */
static void ft__rope_angles(float *cs, const int32_t *pos, const ft_rope_opts *o, int64_t lo, int64_t hi) {
    int64_t r, i, n2 = o->n_rot / 2;
    float range[2] = {0.0f, 0.0f}, mscale = o->attn_factor;
    if (o->ext_factor != 0.0f) {
        ft__rope_yarn_range(o, range);
        mscale *= 1.0f + 0.1f * logf(1.0f / o->freq_scale);
    }
    for (r = lo; r < hi; r++)
        for (i = 0; i < n2; i++) {
            float te = (float)pos[r] * powf(o->base, -2.0f * (float)i / (float)o->n_rot), theta;
            if (o->freq_factors) te /= o->freq_factors[i];
            theta = o->freq_scale * te;
            if (o->ext_factor != 0.0f) {
                float y = ((float)i - range[0]) / FT__MAX(0.001f, range[1] - range[0]);
                float mix = (1.0f - FT__MIN(1.0f, FT__MAX(0.0f, y))) * o->ext_factor;
                theta = theta * (1.0f - mix) + te * mix;
            }
            cs[(r * n2 + i) * 2] = cosf(theta) * mscale;
            cs[(r * n2 + i) * 2 + 1] = sinf(theta) * mscale;
        }
}
/* RoPE on rows of n_head heads of D dims: x (N, n_head*D), angles cs from ft__rope_angles.
   sign = +1 forward, -1 for the backward (rotation by -theta). NORM pairs (2i, 2i+1); NEOX
   pairs (i, i + n_rot/2). */
static void ft__rope_rows(float *y, const float *x, const float *cs, int n_head,
                          int64_t D, int n_rot, int mode, float sign, int64_t lo, int64_t hi) {
    int64_t r, h, i;
    for (r = lo; r < hi; r++) {
        const float *xr = x + r * n_head * D; float *yr = y + r * n_head * D;
        if (xr != yr) memcpy(yr, xr, (size_t)(n_head * D) * sizeof(float));
        for (i = 0; i < n_rot / 2; i++) {
            float c = cs[(r * (n_rot / 2) + i) * 2], s = sign * cs[(r * (n_rot / 2) + i) * 2 + 1];
            for (h = 0; h < n_head; h++) {
                float *v = yr + h * D;
                int64_t i0 = mode == FT_ROPE_NEOX ? i : 2 * i, i1 = mode == FT_ROPE_NEOX ? i + n_rot / 2 : 2 * i + 1;
                float x0 = v[i0], x1 = v[i1];
                v[i0] = x0 * c - x1 * s;
                v[i1] = x0 * s + x1 * c;
            }
        }
    }
}

/* ---- attention ----------------------------------------------------------------------------------
   q (B, T, H*D); k, v (B, Tk, Hkv*D); prefix pk, pv (P, Hkv*D) or NULL; out (B, T, H*D);
   lse (B, H, T) = log-sum-exp of each query's scaled scores (the backward recomputes the
   probabilities from it instead of storing (T, Tk) matrices). Query t of batch b sees every
   prefix key, and key j when !causal || j <= q_offset + t, and seg[b,j] == seg[b,t] if seg.
   Query head h reads kv head g = h / rep, rep = H / Hkv (grouped-query attention, GQA).

   Blocks. Instead of one dot product per (query, key), a block of queries goes through a few small
   GEMMs (ft__gemm_on_thread): the positions [t0, t0 + n) of the rep heads that read kv head g,
   R = rep * n rows stacked head after head (row i: head g * rep + i / n, position t0 + i % n), so
   the keys and values packed for a GEMM serve all of them. When causal no row of the block sees a
   key past kend = q_offset + t0 + n, so keys [kend, Tk) are skipped (about half of the work for
   self-attention); inside [0, kend) the keys a row does not see get weight 0. With Kp, Vp the
   prefix keys and values of kv head g, K, V its keys [0, kend), Q, O, dO the block's rows of q,
   out and out's gradient (copied to R x D), and (R x (P + kend)) matrices as [prefix columns |
   key columns], row by row:

     forward                                     backward
       S   = Qs Kp^T | Qs K^T,  Qs = scale Q       S as in the forward;  W = e^(S - lse)
       E   = e^(S - max)                           dW  = dO Vp^T | dO V^T
       lse = max + log(sum E)                      dS  = W * (dW - rowsum(dO * O))
       O   = (E[:, prefix] Vp + E[:, keys] V)      dQ += scale (dS[:, prefix] Kp + dS[:, keys] K)
             / sum E                               dK += dS[:, keys]^T Qs,   dV += W[:, keys]^T dO
                                                   dKp, dVp likewise, into per-(b, g) partials

   A forward block of fewer rows than the GEMM's register tile (decoding one token: R = rep) takes
   dot products instead (ft__attn_mm): packing the keys would cost more than it saves.

   Threads: the forward splits the blocks; the backward the (b, g) pairs, each owning dk, dv of kv
   head g and dq of the heads that read it, so no two threads write the same memory. A block's
   numbers depend neither on which thread computes it nor on how many there are. */
#ifndef FT__ATTN_ROWS
#define FT__ATTN_ROWS 96    /* rows of a block (rep heads x positions), unless rep is more:
                               the (R x (P + kend)) blocks stay in L2                       */
#endif
#ifndef FT__ATTN_QB
#define FT__ATTN_QB 64      /* positions of a block at most: a causal block computes the whole
                               square of keys it ends with, half of it masked               */
#endif
typedef struct ft__attn {
    const float *q, *k, *v, *pk, *pv, *out, *lse, *dout;
    float *o, *l, *dq, *dk, *dv, *dpk, *dpv;      /* dpk, dpv: per-task partials (B*Hkv, P, D) */
    float *scratch; int64_t scratch_n;            /* per thread scratch_n floats (ft__attn_run) */
    int64_t B, T, Tk, P, q_offset, D; int H, Hkv; float scale; int causal; const int32_t *seg;
    const int64_t *q_offsets;                     /* (B) or NULL                                */
    int64_t window;                               /* sliding window, 0: none                    */
    ft__pool *pool;                               /* the pool running the task (GEMM scratch)   */
} ft__attn;

static int64_t ft__attn_qoff(const ft__attn *a, int64_t b) { return a->q_offsets ? a->q_offsets[b] : a->q_offset; }
static int64_t ft__attn_kend(const ft__attn *a, int64_t b, int64_t t) {   /* query t sees no key >= kend */
    return a->causal ? FT__MAX(0, FT__MIN(a->Tk, ft__attn_qoff(a, b) + t + 1)) : a->Tk;
}
static int64_t ft__attn_kbeg(const ft__attn *a, int64_t b, int64_t t) {   /* ... nor key < kbeg (window) */
    return a->window > 0 ? FT__MAX(0, ft__attn_qoff(a, b) + t - a->window + 1) : 0;
}
/* positions per block */
static int64_t ft__attn_qb(const ft__attn *a) { return FT__MAX(1, FT__MIN(FT__ATTN_QB, FT__ATTN_ROWS / (a->H / a->Hkv))); }
/* Rows of score blocks are padded to a multiple of 16 floats, so that the vector passes over a row
   run without scalar tails. */
static int64_t ft__attn_pad(int64_t n) { return (n + 15) / 16 * 16; }

/* x (R, D) = f * the block's rows of src (B, T, H*D): positions [t0, t0 + n) of the heads of kv head g */
static void ft__attn_gather(const ft__attn *a, float *x, const float *src, float f, int64_t b, int64_t g, int64_t t0, int64_t n) {
    int64_t rep = a->H / a->Hkv, i;
    for (i = 0; i < rep * n; i++)
        ft__vec_scale(a->D, x + i * a->D, f, src + ((b * a->T + t0 + i % n) * a->H + g * rep + i / n) * a->D);
}

/* Row s (ls floats) of query t: its scaled scores, the P prefix keys then keys [0, kend) of the
   block. Sets those of other segments, those before the window and the padding [n, *nv) to -inf,
   n = P + (keys t may see), *nv = ft__attn_pad(n) <= ls. Returns n. */
static int64_t ft__attn_row_mask(const ft__attn *a, int64_t b, int64_t t, float *s, int64_t *nv) {
    int64_t n = a->P + ft__attn_kend(a, b, t), j, kbeg = FT__MIN(ft__attn_kbeg(a, b, t), n - a->P);
    const int32_t *seg = a->seg ? a->seg + b * a->T : NULL;
    if (seg) for (j = 0; j < n - a->P; j++) if (seg[j] != seg[t]) s[a->P + j] = -INFINITY;
    for (j = 0; j < kbeg; j++) s[a->P + j] = -INFINITY;
    *nv = ft__attn_pad(n);
    for (j = n; j < *nv; j++) s[j] = -INFINITY;
    return n;
}
/* then s = e^(s - shift) (shift = -inf: t sees nothing), exactly 0 for the keys t does not see,
   up to ls; returns the sum */
static float ft__attn_row_exp(const ft__attn *a, int64_t b, int64_t t, float *s, int64_t n, int64_t nv, int64_t ls,
                              float shift) {
    int64_t j; float sum;
    if (shift == -INFINITY) n = nv = 0;
    sum = ft__vec_exp(nv, s, s, shift);
    if (a->seg) for (j = 0; j < n - a->P; j++) if (a->seg[b * a->T + j] != a->seg[b * a->T + t]) s[a->P + j] = 0.0f;
    if (n > a->P) memset(s + a->P, 0, (size_t)FT__MIN(ft__attn_kbeg(a, b, t), n - a->P) * sizeof(float));
    memset(s + n, 0, (size_t)(ls - n) * sizeof(float));
    return sum;
}
/* ds = w * (ds - d) over n floats: dS from dW, the rows of the backward */
static void ft__attn_row_ds(int64_t n, const float *w, float *ds, float d) {
    int64_t j = 0;
#ifdef FT__W
    ft__vf vd = ft__vset1(d);
    for (; j + FT__W <= n; j += FT__W) ft__vstore(ds + j, ft__vmul(ft__vload(w + j), ft__vsub(ft__vload(ds + j), vd)));
#endif
    for (; j < n; j++) ds[j] = w[j] * (ds[j] - d);
}

/* C (M x N) = A (M x K) op(B) [+ C] for the forward's blocks: a GEMM on this thread, or for a few
   rows (decoding one token: R = rep) dot products and axpys, cheaper than packing the keys */
static void ft__attn_mm(const ft__attn *a, int ith, int transB, int64_t M, int64_t N, int64_t K, const float *A,
                        int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc, int accumulate) {
    int64_t i, j;
    if (M >= FT__GEMM_MR) { ft__gemm_on_thread(a->pool, ith, 0, transB, M, N, K, A, lda, B, ldb, C, ldc, accumulate); return; }
    for (i = 0; i < M; i++) {
        float *c = C + i * ldc;
        if (transB) for (j = 0; j < N; j++) c[j] = (accumulate ? c[j] : 0.0f) + ft__vec_dot(K, A + i * lda, B + j * ldb);
        else {
            if (!accumulate) memset(c, 0, (size_t)N * sizeof(float));
            for (j = 0; j < K; j++) ft__vec_axpy(N, A[i * lda + j], B + j * ldb, c);
        }
    }
}

/* tasks over the blocks: (b, g, positions [t0, t0 + qb)) */
static void ft__attn_forward_task(void *p, int ith, int nth) {
    ft__attn *a = FT__CAST(ft__attn *, p);
    int64_t D = a->D, P = a->P, ks = a->Hkv * D, rep = a->H / a->Hkv, qb = ft__attn_qb(a);
    int64_t nb = (a->T + qb - 1) / qb, lo, hi, blk, i;
    float *S = a->scratch + (size_t)ith * (size_t)a->scratch_n;          /* (R, ls)         */
    float *X = S + rep * qb * ft__attn_pad(P + a->Tk);                   /* (R, D): Qs, O   */
    float *inv = X + rep * qb * D;                                       /* (R): 1 / row sums */
    ft__split(a->B * a->Hkv * nb, ith, nth, &lo, &hi);
    for (blk = lo; blk < hi; blk++) {
        int64_t b = blk / (a->Hkv * nb), g = blk / nb % a->Hkv, t0 = blk % nb * qb, n = FT__MIN(qb, a->T - t0), R = rep * n;
        int64_t kend = ft__attn_kend(a, b, t0 + n - 1), ls = ft__attn_pad(P + kend);
        const float *k = a->k + b * a->Tk * ks + g * D, *v = a->v + b * a->Tk * ks + g * D;
        ft__attn_gather(a, X, a->q, a->scale, b, g, t0, n);
        if (P) ft__attn_mm(a, ith, 1, R, P, D, X, D, a->pk + g * D, ks, S, ls, 0);
        ft__attn_mm(a, ith, 1, R, kend, D, X, D, k, ks, S + P, ls, 0);
        for (i = 0; i < R; i++) {               /* e^(s - max) rows, lse; normalized in O */
            int64_t h = g * rep + i / n, t = t0 + i % n, nv, nr;
            float *s = S + i * ls, m, sum;
            nr = ft__attn_row_mask(a, b, t, s, &nv);
            m = ft__vec_max(nv, s);
            sum = ft__attn_row_exp(a, b, t, s, nr, nv, ls, m);
            inv[i] = m == -INFINITY ? 0.0f : 1.0f / sum;
            a->l[(b * a->H + h) * a->T + t] = m == -INFINITY ? m : m + logf(sum);
        }
        if (P) ft__attn_mm(a, ith, 0, R, D, P, S, ls, a->pv + g * D, ks, X, D, 0);
        ft__attn_mm(a, ith, 0, R, D, kend, S + P, ls, v, ks, X, D, P > 0);
        for (i = 0; i < R; i++)
            ft__vec_scale(D, a->o + ((b * a->T + t0 + i % n) * a->H + g * rep + i / n) * D, inv[i], X + i * D);
    }
}

/* tasks over (b, kv head) pairs: each owns dk, dv of its head and dq of the heads that share it */
static void ft__attn_backward_task(void *p, int ith, int nth) {
    ft__attn *a = FT__CAST(ft__attn *, p);
    int64_t D = a->D, P = a->P, ks = a->Hkv * D, rep = a->H / a->Hkv, qb = ft__attn_qb(a), lo, hi, bg, t0, i;
    int64_t mat = rep * qb * ft__attn_pad(P + a->Tk);
    float *W = a->scratch + (size_t)ith * (size_t)a->scratch_n;          /* (R, ls)          */
    float *dS = W + mat;                                                 /* (R, ls)          */
    float *X = dS + mat, *Y = X + rep * qb * D, *Z = Y + rep * qb * D;   /* (R, D): Qs, dO, dQ */
    ft__split(a->B * a->Hkv, ith, nth, &lo, &hi);
    for (bg = lo; bg < hi; bg++) {
        int64_t b = bg / a->Hkv, g = bg % a->Hkv, kv = b * a->Tk * ks + g * D;
        const float *k = a->k + kv, *v = a->v + kv;
        float *dk = a->dk ? a->dk + kv : NULL, *dv = a->dv ? a->dv + kv : NULL;
        float *dpk = a->dpk ? a->dpk + bg * P * D : NULL, *dpv = a->dpv ? a->dpv + bg * P * D : NULL;
        for (t0 = 0; t0 < a->T; t0 += qb) {
            int64_t n = FT__MIN(qb, a->T - t0), R = rep * n, kend = ft__attn_kend(a, b, t0 + n - 1), ls = ft__attn_pad(P + kend);
            ft__attn_gather(a, X, a->q, a->scale, b, g, t0, n);
            ft__attn_gather(a, Y, a->dout, 1.0f, b, g, t0, n);
            if (P) {
                ft__gemm_on_thread(a->pool, ith, 0, 1, R, P, D, X, D, a->pk + g * D, ks, W, ls, 0);
                ft__gemm_on_thread(a->pool, ith, 0, 1, R, P, D, Y, D, a->pv + g * D, ks, dS, ls, 0);
            }
            ft__gemm_on_thread(a->pool, ith, 0, 1, R, kend, D, X, D, k, ks, W + P, ls, 0);
            ft__gemm_on_thread(a->pool, ith, 0, 1, R, kend, D, Y, D, v, ks, dS + P, ls, 0);
            for (i = 0; i < R; i++) {               /* W, and dW -> dS in place (0 where W is) */
                int64_t row = ((b * a->T + t0 + i % n) * a->H + g * rep + i / n) * D, nv, nr;
                float *w = W + i * ls, *ds = dS + i * ls, lse = a->lse[(b * a->H + g * rep + i / n) * a->T + t0 + i % n];
                nr = ft__attn_row_mask(a, b, t0 + i % n, w, &nv);
                ft__attn_row_exp(a, b, t0 + i % n, w, nr, nv, ls, lse);
                if (lse == -INFINITY) nr = 0;
                else ft__attn_row_ds(nr, w, ds, ft__vec_dot(D, a->dout + row, a->out + row));
                memset(ds + nr, 0, (size_t)(ls - nr) * sizeof(float));
            }
            if (a->dq) {
                if (P) ft__gemm_on_thread(a->pool, ith, 0, 0, R, D, P, dS, ls, a->pk + g * D, ks, Z, D, 0);
                ft__gemm_on_thread(a->pool, ith, 0, 0, R, D, kend, dS + P, ls, k, ks, Z, D, P > 0);
                for (i = 0; i < R; i++)
                    ft__vec_axpy(D, a->scale, Z + i * D, a->dq + ((b * a->T + t0 + i % n) * a->H + g * rep + i / n) * D);
            }
            if (dk) ft__gemm_on_thread(a->pool, ith, 1, 0, kend, D, R, dS + P, ls, X, D, dk, ks, 1);
            if (dv) ft__gemm_on_thread(a->pool, ith, 1, 0, kend, D, R, W + P, ls, Y, D, dv, ks, 1);
            if (dpk) ft__gemm_on_thread(a->pool, ith, 1, 0, P, D, R, dS, ls, X, D, dpk, D, 1);
            if (dpv) ft__gemm_on_thread(a->pool, ith, 1, 0, P, D, R, W, ls, Y, D, dpv, D, 1);
        }
    }
}

/* ---- cross-entropy and log-prob rows -------------------------------------------------------------
   logits (N, V), targets (N) -> lse (N); rows with target == ignore are skipped. */
typedef struct ft__xent {
    const float *x; const int32_t *tgt; int32_t ignore; int64_t V;
    float *lse;                     /* (N)                                                   */
    float *dx; const float *g;      /* backward: dx (N, V) += g[i] * (onehot - softmax)      */
} ft__xent;
static void ft__xent_forward_rows(void *p, int64_t lo, int64_t hi) {
    ft__xent *e = FT__CAST(ft__xent *, p);
    int64_t i;
    for (i = lo; i < hi; i++) {
        const float *xr = e->x + i * e->V;
        float m, s;
        if (e->tgt[i] == e->ignore) { e->lse[i] = 0; continue; }
        m = ft__vec_max(e->V, xr);
        s = ft__vec_expsum(e->V, xr, m);
        e->lse[i] = m + logf(s);
    }
}
/* dx += g[i] * (onehot(target) - softmax(x)): the gradient of log p(target) */
static void ft__xent_backward_rows(void *p, int64_t lo, int64_t hi) {
    ft__xent *e = FT__CAST(ft__xent *, p);
    int64_t i;
    for (i = lo; i < hi; i++) {
        const float *xr = e->x + i * e->V; float *dxr = e->dx + i * e->V;
        float gi = e->g[i], lse = e->lse[i];
        if (e->tgt[i] == e->ignore || gi == 0.0f) continue;
        ft__vec_exp_axpy(e->V, -gi, xr, lse, dxr);
        dxr[e->tgt[i]] += gi;
    }
}

/* ============================================================================================
   [autograd] the tape, every op (forward + backward), the backward pass
   An op checks shapes, computes its output, and — when grad mode is on and an input requires
   a gradient — appends a node holding its inputs, the inputs' versions and what its backward
   needs. Backward functions ACCUMULATE into ->grad of the inputs that require it.
   ============================================================================================ */

struct ft__node {
    ft_op      op;
    ft_tensor *out;
    ft_tensor *in[3];
    uint32_t   ver[4];          /* versions of in[0..2] and out when recorded                 */
    float      f[3];            /* float arguments (eps, scale, p, bounds, rope base)         */
    int64_t    n[4];            /* integer arguments (transposes, axis, counts)               */
    int32_t   *ids;             /* arena copy of ids / targets / positions                    */
    float     *s0, *s1;         /* saved buffers (rstd, mean, lse, mask)                      */
    void      *extra;           /* op-specific (attention options)                            */
};

static const char *const ft__op_names[] = {
    "none", "matmul", "add", "sub", "mul", "scale", "sum", "mean", "rmsnorm", "layernorm",
    "rope", "attention", "softmax", "log_softmax", "silu", "gelu", "tanh", "relu", "sigmoid",
    "logsigmoid", "exp", "log", "swiglu", "embedding", "cross_entropy", "logprob", "clamp",
    "minimum", "maximum", "where", "dropout", "concat", "slice", "reshape", "log1mexp",
    "checkpoint", "lora_linear", "gelu_tanh", "moe_combine", "linear_xent"
};
typedef char ft__op_names_fit_the_enum[sizeof ft__op_names / sizeof ft__op_names[0] == FT_OP_COUNT ? 1 : -1];
FT_API const char *ft_op_name(ft_op op) {
    return op >= 0 && op < FT_OP_COUNT ? ft__op_names[op] : "?";
}

static int ft__wants(const ft_tensor *t) { return t && (t->flags & FT_TENSOR_REQUIRES_GRAD); }

/* the version that in-place writes bump: a view shares its owner's */
static uint32_t ft__version(const ft_tensor *t) { return t ? (t->view_of ? t->view_of->version : t->version) : 0; }

/* append a node when the output needs a gradient (an input requires one, or `extra` says
   another input does); NULL when nothing is recorded */
static ft__node *ft__record_x(ft_ctx *ctx, ft_op op, ft_tensor *out, ft_tensor *a, ft_tensor *b, ft_tensor *c, int extra) {
    ft__node *nd;
    if (!ctx->grad_enabled || !(ft__wants(a) || ft__wants(b) || ft__wants(c) || extra)) return NULL;
    if (ctx->n_tape == ctx->cap_tape) {
        int nc = ctx->cap_tape ? 2 * ctx->cap_tape : 256;
        ft__node *nt = FT__CAST(ft__node *, FT_REALLOC(ctx->tape, (size_t)nc * sizeof *nt));
        if (!nt) { ft__fail(ctx, FT_ERR_NOMEM, "tape: out of memory (%d nodes)", nc); return NULL; }
        ctx->tape = nt; ctx->cap_tape = nc; ctx->mallocs++;
    }
    nd = &ctx->tape[ctx->n_tape++];
    memset(nd, 0, sizeof *nd);
    nd->op = op; nd->out = out; nd->in[0] = a; nd->in[1] = b; nd->in[2] = c;
    nd->ver[0] = ft__version(a); nd->ver[1] = ft__version(b); nd->ver[2] = ft__version(c);
    nd->ver[3] = ft__version(out);
    out->flags |= FT_TENSOR_REQUIRES_GRAD;
    out->flags &= ~(uint32_t)FT_TENSOR_NO_TAPE;
    return nd;
}
static ft__node *ft__record(ft_ctx *ctx, ft_op op, ft_tensor *out, ft_tensor *a, ft_tensor *b, ft_tensor *c) {
    return ft__record_x(ctx, op, out, a, b, c, 0);
}

static int32_t *ft__copy_ids(ft_ctx *ctx, const int32_t *ids, int64_t n) {
    int32_t *c = FT__CAST(int32_t *, ft__arena_alloc(ctx, (size_t)n * sizeof(int32_t)));
    if (c) memcpy(c, ids, (size_t)n * sizeof(int32_t));
    else ft__fail(ctx, FT_ERR_NOMEM, "op: arena out of memory");
    return c;
}

/* an output of x's shape, not zeroed: every op that uses it writes all of it */
static ft_tensor *ft__like(ft_ctx *ctx, const ft_tensor *x) { return ft__tensor_x(ctx, FT_TYPE_F32, x->ndim, x->shape, NULL, 0); }

#define FT__IN(x) do { if (!(x)) return NULL; } while (0)
#define FT__F32(ctx, x, opname) do { if ((x)->type != FT_TYPE_F32) \
    return ft__fail(ctx, FT_ERR_UNSUPPORTED, "%s: input must be f32 (is %s)", opname, ft_type_name((x)->type)); } while (0)

/* ---- matmul --------------------------------------------------------------------------------- */
/* Weights in any storage type (f16, bf16, the GGML quants) are never widened whole: the GEMM
   decodes the rows of W it packs, K block by K block (forward, y = x W^T), and the input
   gradient dx = dy W decodes one K block of rows of W at a time. */
/* dst[0..kc) = W[n][k0 .. k0+kc) (W (N, K) of any type, NF4 included: its kc weights decoded
   straight from the packed nibbles) */
static void ft__gemm_row_decode(const ft__gemm_bsrc *s, int64_t n, int64_t k0, int64_t kc, float *dst) {
    ft__weight_row(FT__CAST(const ft_tensor *, s->data), n, k0, kc, dst);
}
typedef struct ft__decode_job { const ft_tensor *W; int64_t r0; float *dst; } ft__decode_job;
static void ft__decode_rows(void *p, int64_t lo, int64_t hi) {      /* rows r0+lo .. r0+hi of W */
    ft__decode_job *j = FT__CAST(ft__decode_job *, p);
    int64_t r, K = j->W->shape[1];
    for (r = lo; r < hi; r++) ft__weight_row(j->W, j->r0 + r, 0, K, j->dst + r * K);
}
/* few rows (token-by-token decoding): no packing, each row of W decoded once, dotted with all */
typedef struct ft__gemv_job { int64_t M, N, K; const float *A; const ft_tensor *W; float *C; } ft__gemv_job;
static void ft__gemv_rows(void *p, int64_t lo, int64_t hi) {
    ft__gemv_job *j = FT__CAST(ft__gemv_job *, p);
    float buf[4096];                                  /* a multiple of every block size */
    int64_t n, k0, m; size_t rb = ft_type_row_bytes(j->W->type, j->K);
    for (n = lo; n < hi; n++) {
        const unsigned char *row = FT__CAST(const unsigned char *, j->W->data) + (size_t)n * rb;
        for (m = 0; m < j->M; m++) j->C[m * j->N + n] = 0;
        for (k0 = 0; k0 < j->K; k0 += 4096) {
            int64_t kc = FT__MIN(4096, j->K - k0);
            const float *w = buf;
            if (j->W->type == FT_TYPE_F32) w = FT__CAST(const float *, FT__CAST(const void *, row)) + k0;
            else ft__weight_row(j->W, n, k0, kc, buf);
            for (m = 0; m < j->M; m++) j->C[m * j->N + n] += ft__vec_dot(kc, j->A + m * j->K + k0, w);
        }
    }
}

/* C (M, N) = A (M, K) W^T, W (N, K) of any type */
static void ft__matmul_wt(ft_ctx *ctx, int64_t M, int64_t N, int64_t K, const float *A, const ft_tensor *W, float *C) {
    ft__gemm_bsrc src;
    if (M <= 4) {
        ft__gemv_job j;
        j.M = M; j.N = N; j.K = K; j.A = A; j.W = W; j.C = C;
        ft__parallel(ctx, N, 2.0 * (double)(M * N * K), ft__gemv_rows, &j);
        return;
    }
    src.data = W->type == FT_TYPE_F32 ? W->data : FT__CAST(const void *, W);
    src.ld = K; src.trans = 1; src.row = W->type == FT_TYPE_F32 ? NULL : ft__gemm_row_decode;
    ft__gemm_src(&ctx->pool, 0, M, N, K, A, K, &src, C, N, 0);
}
/* C (M, K) [+]= G (M, N) W, W (N, K) of any type, decoded one K block of rows at a time */
static void ft__matmul_gw(ft_ctx *ctx, int64_t M, int64_t N, int64_t K, const float *G, const ft_tensor *W, float *C, int accumulate) {
    int64_t kc = ft__gemm_kc(N), n0;
    ft__decode_job j;
    if (W->type == FT_TYPE_F32) { ft__gemm(&ctx->pool, 0, 0, M, K, N, G, N, FT__F(W), K, C, K, accumulate); return; }
    j.W = W; j.dst = FT__CAST(float *, ft__arena_alloc(ctx, (size_t)(kc * K) * sizeof(float)));
    if (!j.dst) { ft__fail(ctx, FT_ERR_NOMEM, "matmul backward: arena out of memory"); return; }
    for (n0 = 0; n0 < N; n0 += kc) {
        int64_t nb = FT__MIN(kc, N - n0);
        j.r0 = n0;
        ft__parallel(ctx, nb, 8.0 * (double)(nb * K), ft__decode_rows, &j);
        ft__gemm(&ctx->pool, 0, 0, M, K, nb, G + n0, N, j.dst, K, C, K, accumulate || n0 > 0);
    }
}

/* a (..., M, K) [ta: (..., K, M)]; b (K, N) [tb: (N, K)] shared, or batched like a */
FT_API ft_tensor *ft_matmul(ft_ctx *ctx, ft_tensor *a, ft_tensor *b, int ta, int tb) {
    int64_t M, K, N, Kb, batch, i, shape[FT_MAX_DIMS];
    ft_tensor *y; const float *bd; ft__node *nd;
    FT__IN(a); FT__IN(b);
    FT__F32(ctx, a, "matmul");
    if (a->ndim < 2 || b->ndim < 2) return ft__fail(ctx, FT_ERR_SHAPE, "matmul: inputs need 2+ dims (%d, %d)", a->ndim, b->ndim);
    M = a->shape[a->ndim - (ta ? 1 : 2)]; K = a->shape[a->ndim - (ta ? 2 : 1)];
    Kb = b->shape[b->ndim - (tb ? 1 : 2)]; N = b->shape[b->ndim - (tb ? 2 : 1)];
    if (K != Kb) return ft__fail(ctx, FT_ERR_SHAPE, "matmul: inner dims differ (%lld vs %lld)", (long long)K, (long long)Kb);
    if (b->ndim > 2) {
        if (b->ndim != a->ndim) return ft__fail(ctx, FT_ERR_SHAPE, "matmul: batched b needs a's batch dims");
        for (i = 0; i < a->ndim - 2; i++)
            if (a->shape[i] != b->shape[i]) return ft__fail(ctx, FT_ERR_SHAPE, "matmul: batch dim %d differs", (int)i);
    }
    if (b->type != FT_TYPE_F32) {
        if (ft__wants(b)) return ft__fail(ctx, FT_ERR_UNSUPPORTED, "matmul: a %s b cannot take a gradient", ft_type_name(b->type));
        if (b->ndim != 2 || !tb || ta || !ft__weight_decodable(b, K))
            return ft__fail(ctx, FT_ERR_UNSUPPORTED, "matmul: a %s b must be a 2-D weight (out, in) used as x W^T", ft_type_name(b->type));
    }
    for (i = 0; i < a->ndim - 2; i++) shape[i] = a->shape[i];
    shape[a->ndim - 2] = M; shape[a->ndim - 1] = N;
    y = ft__tensor_x(ctx, FT_TYPE_F32, a->ndim, shape, NULL, 0);          /* the GEMM writes all */
    FT__IN(y);
    batch = ft_numel(a) / (M * K);
    bd = FT__F(b);
    if (b->type != FT_TYPE_F32)                              /* frozen weights, any type       */
        ft__matmul_wt(ctx, batch * M, N, K, FT__F(a), b, FT__F(y));
    else if (b->ndim == 2 && !ta)                            /* fold the batch into the rows   */
        ft_gemm(ctx, 0, tb, batch * M, N, K, FT__F(a), K, bd, tb ? K : N, FT__F(y), N, 0);
    else
        for (i = 0; i < batch; i++)
            ft_gemm(ctx, ta, tb, M, N, K, FT__F(a) + i * M * K, ta ? M : K,
                    bd + (b->ndim == 2 ? 0 : i * K * N), tb ? K : N, FT__F(y) + i * M * N, N, 0);
    if ((nd = ft__record(ctx, FT_OP_MATMUL, y, a, b, NULL)) != NULL) {
        nd->n[0] = ta; nd->n[1] = tb; nd->n[2] = M; nd->n[3] = K;
        nd->s0 = FT__CAST(float *, bd);
    }
    return y;
}

static void ft__matmul_backward(ft_ctx *ctx, ft__node *nd) {
    ft_tensor *a = nd->in[0], *b = nd->in[1], *y = nd->out;
    int ta = (int)nd->n[0], tb = (int)nd->n[1];
    int64_t M = nd->n[2], K = nd->n[3], N = y->shape[y->ndim - 1], batch = ft_numel(a) / (M * K), i;
    int64_t lda = ta ? M : K, ldb = tb ? K : N;
    const float *dC = y->grad, *B = nd->s0;
    int shared = b->ndim == 2;
    if (ft__wants(a)) {
        float *dA = ft__grad(ctx, a);
        if (!dA) return;
        if (b->type != FT_TYPE_F32)             /* dA += dC W, W decoded block by block       */
            ft__matmul_gw(ctx, batch * M, N, K, dC, b, dA, 1);
        else if (!ta && shared)                 /* dA (batch*M, K) += dC op(B)^T              */
            ft_gemm(ctx, 0, !tb, batch * M, K, N, dC, N, B, ldb, dA, K, 1);
        else
            for (i = 0; i < batch; i++) {
                const float *Bi = B + (shared ? 0 : i * K * N), *dCi = dC + i * M * N;
                if (!ta) ft_gemm(ctx, 0, !tb, M, K, N, dCi, N, Bi, ldb, dA + i * M * K, K, 1);
                else     ft_gemm(ctx, tb, 1, K, M, N, Bi, ldb, dCi, N, dA + i * M * K, M, 1);  /* dA (K, M) += op(B) dC^T */
            }
    }
    if (ft__wants(b)) {
        float *dB = ft__grad(ctx, b);
        if (!dB) return;
        if (shared && !ta) {      /* one GEMM over all rows of the folded batch */
            if (!tb) ft_gemm(ctx, 1, 0, K, N, batch * M, FT__F(a), K, dC, N, dB, N, 1);
            else     ft_gemm(ctx, 1, 0, N, K, batch * M, dC, N, FT__F(a), K, dB, K, 1);
        } else
            for (i = 0; i < batch; i++) {
                const float *Ai = FT__F(a) + i * M * K, *dCi = dC + i * M * N;
                float *dBi = dB + (shared ? 0 : i * K * N);
                if (!tb) ft_gemm(ctx, !ta, 0, K, N, M, Ai, lda, dCi, N, dBi, N, 1);   /* op(A)^T dC */
                else     ft_gemm(ctx, 1, ta, N, K, M, dCi, N, Ai, lda, dBi, K, 1);    /* dC^T op(A) */
            }
    }
}

/* ---- linear layer with a LoRA branch -----------------------------------------------------------------
   N rows of x (in), W (out, in), A (r, in), B (out, r), xd (N, in) = x or x after dropout:
     forward    y (N, out)  = x W^T  +  us^T B^T      us (r, N) = s A xd^T   (kept for backward)
     backward   vt (r, N)   = s B^T G^T               G = dL/dy (N, out)
                dA (r, in) += vt xd        dB (out, r) += (us G)^T       dW (out, in) += G^T x
                dx (N, in) += G W          dxd (N, in) += vt^T A
   The low-rank side is kept as (r, N): the products with r as an outer side run on the skinny
   kernels, those with r as the inner side (K = r) on the GEMM. */
typedef struct ft__lora_lin { ft_tensor *W, *xd; float *us; } ft__lora_lin;
FT_API ft_tensor *ft_lora_linear(ft_ctx *ctx, ft_tensor *x, ft_tensor *W, ft_tensor *A, ft_tensor *B, float scale, ft_tensor *xd) {
    int64_t in, out, r, N, shape[FT_MAX_DIMS]; int i; ft_tensor *y; ft__node *nd; float *us;
    FT__IN(x); FT__IN(W); FT__IN(A); FT__IN(B);
    if (!xd) xd = x;
    FT__F32(ctx, x, "lora_linear"); FT__F32(ctx, A, "lora_linear"); FT__F32(ctx, B, "lora_linear"); FT__F32(ctx, xd, "lora_linear");
    in = x->shape[x->ndim - 1]; N = ft_nrows(x);
    if (W->ndim != 2 || A->ndim != 2 || B->ndim != 2 || W->shape[1] != in || A->shape[1] != in ||
        B->shape[0] != W->shape[0] || B->shape[1] != A->shape[0] || !ft_same_shape(x, xd))
        return ft__fail(ctx, FT_ERR_SHAPE, "lora_linear: x (..., in), W (out, in), A (r, in), B (out, r) and xd like x do not fit");
    out = W->shape[0]; r = A->shape[0];
    if (!ft__weight_decodable(W, in)) return ft__fail(ctx, FT_ERR_UNSUPPORTED, "lora_linear: W of type %s", ft_type_name(W->type));
    if (W->type != FT_TYPE_F32 && ft__wants(W)) return ft__fail(ctx, FT_ERR_UNSUPPORTED, "lora_linear: a %s W cannot take a gradient", ft_type_name(W->type));
    for (i = 0; i < x->ndim - 1; i++) shape[i] = x->shape[i];
    shape[x->ndim - 1] = out;
    y = ft__tensor_x(ctx, FT_TYPE_F32, x->ndim, shape, NULL, 0); FT__IN(y);
    us = FT__CAST(float *, ft__arena_alloc(ctx, (size_t)(r * N) * sizeof(float)));
    if (!us) return ft__fail(ctx, FT_ERR_NOMEM, "lora_linear: arena out of memory");
    ft__matmul_wt(ctx, N, out, in, FT__F(x), W, FT__F(y));                               /* x W^T      */
    ft__skinny_dot(ctx, r, N, in, scale, FT__F(A), FT__F(xd), in, us);                   /* s A xd^T   */
    ft_gemm(ctx, 1, 1, N, out, r, us, N, FT__F(B), r, FT__F(y), out, 1);                 /* += us^T B^T */
    if ((nd = ft__record_x(ctx, FT_OP_LORA_LINEAR, y, x, A, B, ft__wants(W) || (xd != x && ft__wants(xd)))) != NULL) {
        ft__lora_lin *k = FT__CAST(ft__lora_lin *, ft__arena_alloc(ctx, sizeof *k));
        if (!k) return ft__fail(ctx, FT_ERR_NOMEM, "lora_linear: arena out of memory");
        k->W = W; k->xd = xd; k->us = us;
        nd->extra = k; nd->f[0] = scale;
    }
    return y;
}
static void ft__lora_linear_backward(ft_ctx *ctx, ft__node *nd) {
    const ft__lora_lin *k = FT__CAST(const ft__lora_lin *, nd->extra);
    ft_tensor *x = nd->in[0], *A = nd->in[1], *B = nd->in[2], *W = k->W, *xd = k->xd;
    int64_t in = A->shape[1], r = A->shape[0], out = B->shape[0], N = ft_nrows(x), o, j;
    const float *G = nd->out->grad; float s = nd->f[0], *vt = NULL, *d;
    if (ft__wants(A) || ft__wants(xd)) {                  /* vt (r, N) = s B^T G^T, through B^T (r, out) */
        float *bt = FT__CAST(float *, ft__arena_alloc(ctx, (size_t)(r * out) * sizeof(float)));
        vt = FT__CAST(float *, ft__arena_alloc(ctx, (size_t)(r * N) * sizeof(float)));
        if (!vt || !bt) { ft__fail(ctx, FT_ERR_NOMEM, "lora_linear backward: arena out of memory"); return; }
        for (o = 0; o < out; o++) for (j = 0; j < r; j++) bt[j * out + o] = FT__F(B)[o * r + j];
        ft__skinny_dot(ctx, r, N, out, s, bt, G, out, vt);
    }
    if (ft__wants(x)) {                                   /* dx += G W */
        int fresh;
        if (!(d = ft__grad_w(ctx, x, &fresh))) return;
        ft__matmul_gw(ctx, N, out, in, G, W, d, !fresh);
    }
    if (ft__wants(xd)) {                                  /* dxd += vt^T A */
        if (!(d = ft__grad(ctx, xd))) return;
        ft_gemm(ctx, 1, 0, N, in, r, vt, N, FT__F(A), in, d, in, 1);
    }
    if (ft__wants(A)) {                                   /* dA += vt xd */
        if (!(d = ft__grad(ctx, A))) return;
        ft__skinny_acc(ctx, r, N, in, vt, FT__F(xd), in, d, in, 1);
    }
    if (ft__wants(B)) {                                   /* dB += (us G)^T */
        if (!(d = ft__grad(ctx, B))) return;
        ft__skinny_acc(ctx, r, N, out, k->us, G, out, d, 1, r);
    }
    if (ft__wants(W)) {                                   /* dW += G^T x */
        if (!(d = ft__grad(ctx, W))) return;
        ft_gemm(ctx, 1, 0, out, in, N, G, out, FT__F(x), in, d, in, 1);
    }
}

/* ---- broadcasting binary ops -------------------------------------------------------------------- */
typedef struct ft__bcast { int64_t n[4], sa[4], sb[4]; } ft__bcast;

/* shapes aligned at the last dim, padded to 4; stride 0 where an input is broadcast */
static int ft__bcast_init(ft__bcast *bc, const ft_tensor *a, const ft_tensor *b, int64_t *out_shape, int *out_ndim) {
    int64_t as[4], bs[4], ra = 1, rb = 1; int i, nd = FT__MAX(a->ndim, b->ndim);
    for (i = 0; i < 4; i++) {
        int ia = a->ndim - 4 + i, ib = b->ndim - 4 + i;
        as[i] = ia >= 0 ? a->shape[ia] : 1; bs[i] = ib >= 0 ? b->shape[ib] : 1;
        if (as[i] != bs[i] && as[i] != 1 && bs[i] != 1) return 0;
        bc->n[i] = FT__MAX(as[i], bs[i]);
    }
    for (i = 3; i >= 0; i--) {
        bc->sa[i] = as[i] == 1 ? 0 : ra; ra *= as[i];
        bc->sb[i] = bs[i] == 1 ? 0 : rb; rb *= bs[i];
    }
    for (i = 0; i < nd; i++) out_shape[i] = bc->n[4 - nd + i];
    *out_ndim = nd;
    return 1;
}

/* run the body (the variadic part) for every output element io with input offsets ia, ib */
#define FT__BCAST_LOOP(bc, ...) do {                                                             \
    int64_t i0_, i1_, i2_, i3_, io = 0;                                                          \
    for (i0_ = 0; i0_ < (bc).n[0]; i0_++) for (i1_ = 0; i1_ < (bc).n[1]; i1_++)                  \
    for (i2_ = 0; i2_ < (bc).n[2]; i2_++) {                                                      \
        int64_t ba_ = i0_ * (bc).sa[0] + i1_ * (bc).sa[1] + i2_ * (bc).sa[2];                    \
        int64_t bb_ = i0_ * (bc).sb[0] + i1_ * (bc).sb[1] + i2_ * (bc).sb[2];                    \
        for (i3_ = 0; i3_ < (bc).n[3]; i3_++, io++) {                                            \
            int64_t ia = ba_ + i3_ * (bc).sa[3], ib = bb_ + i3_ * (bc).sb[3];                    \
            __VA_ARGS__                                                                          \
        }                                                                                        \
    } } while (0)

/* Same-shape element-wise work, split over the pool in chunks of FT__EW_CHUNK elements:
     FT__EW_ADD    y = a + s b                    (add, sub forward)
     FT__EW_ACC    y = s a  (fresh)  or  y += s a  (a gradient passed on)
     FT__EW_SWIGLU y = silu(a) b                  (a gate, b up)
     FT__EW_SWIGLU_BACK  with c = dy: y = dgate, y2 = dup, each stored (fresh) or added */
enum { FT__EW_ADD, FT__EW_ACC, FT__EW_SWIGLU, FT__EW_SWIGLU_BACK };
#define FT__EW_CHUNK 4096
typedef struct ft__ew { int kind, fresh, fresh2; int64_t n; float s, *y, *y2; const float *a, *b, *c; } ft__ew;
static void ft__ew_chunks(void *p, int64_t c0, int64_t c1) {
    const ft__ew *e = FT__CAST(const ft__ew *, p);
    int64_t lo = c0 * FT__EW_CHUNK, hi = FT__MIN(e->n, c1 * FT__EW_CHUNK), i = lo;
    const float *a = e->a, *b = e->b, *c = e->c; float *y = e->y, *y2 = e->y2, s = e->s;
    switch (e->kind) {
    case FT__EW_ADD:
#ifdef FT__W
        for (; i + FT__W <= hi; i += FT__W) ft__vstore(y + i, ft__vfma(ft__vset1(s), ft__vload(b + i), ft__vload(a + i)));
#endif
        for (; i < hi; i++) y[i] = a[i] + s * b[i];
        break;
    case FT__EW_ACC:
        if (e->fresh) { ft__vec_scale(hi - lo, y + lo, s, a + lo); break; }
        ft__vec_axpy(hi - lo, s, a + lo, y + lo);
        break;
    case FT__EW_SWIGLU:
        ft__vec_silu(hi - lo, y + lo, a + lo);
#ifdef FT__W
        for (; i + FT__W <= hi; i += FT__W) ft__vstore(y + i, ft__vmul(ft__vload(y + i), ft__vload(b + i)));
#endif
        for (; i < hi; i++) y[i] *= b[i];
        break;
    case FT__EW_SWIGLU_BACK:                  /* sig = 1 / (1 + e^-g): dg = dy u sig (1 + g (1 - sig)), du = dy g sig */
#ifdef FT__W
        for (; i + FT__W <= hi; i += FT__W) {
            ft__vf g = ft__vload(a + i), u = ft__vload(b + i), dy = ft__vload(c + i), one = ft__vset1(1.0f);
            ft__vf sg = ft__vdiv(one, ft__vadd(one, ft__vexp(ft__vsub(ft__vzero(), g))));
            ft__vf dg = ft__vmul(ft__vmul(dy, u), ft__vmul(sg, ft__vfma(g, ft__vsub(one, sg), one)));
            ft__vf du = ft__vmul(dy, ft__vmul(g, sg));
            if (y) ft__vstore(y + i, e->fresh ? dg : ft__vadd(dg, ft__vload(y + i)));
            if (y2) ft__vstore(y2 + i, e->fresh2 ? du : ft__vadd(du, ft__vload(y2 + i)));
        }
#endif
        for (; i < hi; i++) {
            float sg = 1.0f / (1.0f + expf(-a[i])), dg = c[i] * b[i] * (sg * (1.0f + a[i] * (1.0f - sg))), du = c[i] * (a[i] * sg);
            if (y) y[i] = e->fresh ? dg : y[i] + dg;
            if (y2) y2[i] = e->fresh2 ? du : y2[i] + du;
        }
        break;
    default: break;
    }
}
static void ft__ew_run(ft_ctx *ctx, ft__ew *e, double flops_per_elem) {
    ft__parallel(ctx, (e->n + FT__EW_CHUNK - 1) / FT__EW_CHUNK, flops_per_elem * (double)e->n, ft__ew_chunks, e);
}
/* dst's gradient += s g (n elements), stored instead when dst has no buffer yet */
static void ft__grad_acc(ft_ctx *ctx, ft_tensor *dst, const float *g, float s) {
    ft__ew e;
    memset(&e, 0, sizeof e);
    if (!(e.y = ft__grad_w(ctx, dst, &e.fresh))) return;
    e.kind = FT__EW_ACC; e.n = ft_numel(dst); e.a = g; e.s = s;
    ft__ew_run(ctx, &e, 2.0);
}

static ft_tensor *ft__binary(ft_ctx *ctx, ft_op op, ft_tensor *a, ft_tensor *b) {
    ft__bcast bc; int64_t shape[4]; int nd; ft_tensor *y; ft__node *node;
    const float *A, *B; float *Y;
    FT__IN(a); FT__IN(b);
    FT__F32(ctx, a, ft_op_name(op)); FT__F32(ctx, b, ft_op_name(op));
    if (!ft__bcast_init(&bc, a, b, shape, &nd))
        return ft__fail(ctx, FT_ERR_SHAPE, "%s: shapes do not broadcast", ft_op_name(op));
    y = ft__tensor(ctx, FT_TYPE_F32, nd, shape, NULL);
    FT__IN(y);
    A = FT__F(a); B = FT__F(b); Y = FT__F(y);
    if ((op == FT_OP_ADD || op == FT_OP_SUB) && ft_same_shape(a, b)) {          /* the residual stream */
        ft__ew e;
        memset(&e, 0, sizeof e);
        e.kind = FT__EW_ADD; e.n = ft_numel(y); e.y = Y; e.a = A; e.b = B; e.s = op == FT_OP_ADD ? 1.0f : -1.0f;
        ft__ew_run(ctx, &e, 1.0);
    } else switch (op) {
    case FT_OP_ADD:     FT__BCAST_LOOP(bc, Y[io] = A[ia] + B[ib];); break;
    case FT_OP_SUB:     FT__BCAST_LOOP(bc, Y[io] = A[ia] - B[ib];); break;
    case FT_OP_MUL:     FT__BCAST_LOOP(bc, Y[io] = A[ia] * B[ib];); break;
    case FT_OP_MINIMUM: FT__BCAST_LOOP(bc, Y[io] = A[ia] < B[ib] || A[ia] != A[ia] ? A[ia] : B[ib];); break;
    case FT_OP_MAXIMUM: FT__BCAST_LOOP(bc, Y[io] = A[ia] > B[ib] || A[ia] != A[ia] ? A[ia] : B[ib];); break;
    default: break;
    }
    if ((node = ft__record(ctx, op, y, a, b, NULL)) != NULL) {
        ft__bcast *keep = FT__CAST(ft__bcast *, ft__arena_alloc(ctx, sizeof bc));
        if (!keep) return ft__fail(ctx, FT_ERR_NOMEM, "op: arena out of memory");
        *keep = bc; node->extra = keep;
    }
    return y;
}

/* da, db accumulate over the broadcast dims; min/max split ties evenly (as PyTorch) */
static void ft__binary_backward(ft_ctx *ctx, ft__node *nd) {
    ft__bcast bc = *FT__CAST(ft__bcast *, nd->extra);
    ft_tensor *a = nd->in[0], *b = nd->in[1];
    const float *A = FT__F(a), *B = FT__F(b), *G = nd->out->grad;
    float *dA, *dB;
    if ((nd->op == FT_OP_ADD || nd->op == FT_OP_SUB) && ft_same_shape(a, b)) {   /* the gradient passes on */
        if (ft__wants(a)) ft__grad_acc(ctx, a, G, 1.0f);
        if (ft__wants(b)) ft__grad_acc(ctx, b, G, nd->op == FT_OP_ADD ? 1.0f : -1.0f);
        return;
    }
    dA = ft__wants(a) ? ft__grad(ctx, a) : NULL; dB = ft__wants(b) ? ft__grad(ctx, b) : NULL;
    switch (nd->op) {
    case FT_OP_ADD: FT__BCAST_LOOP(bc, if (dA) dA[ia] += G[io]; if (dB) dB[ib] += G[io];); break;
    case FT_OP_SUB: FT__BCAST_LOOP(bc, if (dA) dA[ia] += G[io]; if (dB) dB[ib] -= G[io];); break;
    case FT_OP_MUL: FT__BCAST_LOOP(bc, if (dA) dA[ia] += G[io] * B[ib]; if (dB) dB[ib] += G[io] * A[ia];); break;
    case FT_OP_MINIMUM: case FT_OP_MAXIMUM: {
        float sgn = nd->op == FT_OP_MINIMUM ? 1.0f : -1.0f;   /* a wins when sgn*(b - a) > 0 */
        FT__BCAST_LOOP(bc, {
            float d = sgn * (B[ib] - A[ia]), wa = d > 0 ? 1.0f : d < 0 ? 0.0f : 0.5f;
            if (dA) dA[ia] += G[io] * wa;
            if (dB) dB[ib] += G[io] * (1.0f - wa);
        });
        break; }
    default: break;
    }
}

FT_API ft_tensor *ft_add(ft_ctx *ctx, ft_tensor *a, ft_tensor *b) { return ft__binary(ctx, FT_OP_ADD, a, b); }
FT_API ft_tensor *ft_sub(ft_ctx *ctx, ft_tensor *a, ft_tensor *b) { return ft__binary(ctx, FT_OP_SUB, a, b); }
FT_API ft_tensor *ft_mul(ft_ctx *ctx, ft_tensor *a, ft_tensor *b) { return ft__binary(ctx, FT_OP_MUL, a, b); }
FT_API ft_tensor *ft_minimum(ft_ctx *ctx, ft_tensor *a, ft_tensor *b) { return ft__binary(ctx, FT_OP_MINIMUM, a, b); }
FT_API ft_tensor *ft_maximum(ft_ctx *ctx, ft_tensor *a, ft_tensor *b) { return ft__binary(ctx, FT_OP_MAXIMUM, a, b); }

/* ---- scale, sum, mean ------------------------------------------------------------------------ */
FT_API ft_tensor *ft_scale(ft_ctx *ctx, ft_tensor *a, float s) {
    ft_tensor *y; ft__node *nd;
    FT__IN(a); FT__F32(ctx, a, "scale");
    y = ft__like(ctx, a); FT__IN(y);
    ft__vec_scale(ft_numel(a), FT__F(y), s, FT__F(a));
    if ((nd = ft__record(ctx, FT_OP_SCALE, y, a, NULL, NULL)) != NULL) nd->f[0] = s;
    return y;
}
static void ft__scale_backward(ft_ctx *ctx, ft__node *nd) {
    float *dx = ft__grad(ctx, nd->in[0]);
    if (dx) ft__vec_axpy(ft_numel(nd->in[0]), nd->f[0], nd->out->grad, dx);
}

/* op SUM or MEAN, over everything (rows = 0) or over the last dim (rows = 1) */
static ft_tensor *ft__reduce(ft_ctx *ctx, ft_op op, ft_tensor *a, int rows) {
    int64_t shape[FT_MAX_DIMS], C, R, i; int nd_out; ft_tensor *y; ft__node *nd;
    FT__IN(a); FT__F32(ctx, a, ft_op_name(op));
    C = rows ? a->shape[a->ndim - 1] : ft_numel(a);
    R = ft_numel(a) / C;
    if (rows && a->ndim > 1) { nd_out = a->ndim - 1; for (i = 0; i < nd_out; i++) shape[i] = a->shape[i]; }
    else { nd_out = 1; shape[0] = R; }
    y = ft__tensor(ctx, FT_TYPE_F32, nd_out, shape, NULL); FT__IN(y);
    for (i = 0; i < R; i++) {
        double s = 0; int64_t j; const float *x = FT__F(a) + i * C;
        for (j = 0; j < C; j++) s += x[j];                 /* double: long sums stay exact-ish */
        FT__F(y)[i] = (float)(op == FT_OP_MEAN ? s / (double)C : s);
    }
    if ((nd = ft__record(ctx, op, y, a, NULL, NULL)) != NULL) nd->n[0] = C;
    return y;
}
static void ft__reduce_backward(ft_ctx *ctx, ft__node *nd) {
    ft_tensor *a = nd->in[0]; int64_t C = nd->n[0], R = ft_numel(a) / C, i, j;
    float *dA = ft__grad(ctx, a); const float *G = nd->out->grad;
    float k = nd->op == FT_OP_MEAN ? 1.0f / (float)C : 1.0f;
    if (!dA) return;
    for (i = 0; i < R; i++) for (j = 0; j < C; j++) dA[i * C + j] += G[i] * k;
}
FT_API ft_tensor *ft_sum(ft_ctx *ctx, ft_tensor *a) { return ft__reduce(ctx, FT_OP_SUM, a, 0); }
FT_API ft_tensor *ft_mean(ft_ctx *ctx, ft_tensor *a) { return ft__reduce(ctx, FT_OP_MEAN, a, 0); }
FT_API ft_tensor *ft_sum_rows(ft_ctx *ctx, ft_tensor *a) { return ft__reduce(ctx, FT_OP_SUM, a, 1); }
FT_API ft_tensor *ft_mean_rows(ft_ctx *ctx, ft_tensor *a) { return ft__reduce(ctx, FT_OP_MEAN, a, 1); }

/* ---- normalisation ------------------------------------------------------------------------------ */
typedef struct ft__norm_job { float *y, *dx, *s0, *s1; const float *x, *w, *b, *dy; int64_t C; float eps; } ft__norm_job;
static void ft__rmsnorm_fwd_rows(void *p, int64_t lo, int64_t hi) {
    ft__norm_job *j = FT__CAST(ft__norm_job *, p);
    ft__rmsnorm_forward(j->y + lo * j->C, j->s0 + lo, j->x + lo * j->C, j->w, hi - lo, j->C, j->eps);
}
static void ft__rmsnorm_bwd_rows(void *p, int64_t lo, int64_t hi) {
    ft__norm_job *j = FT__CAST(ft__norm_job *, p);
    ft__rmsnorm_backward(j->dx + lo * j->C, NULL, j->dy + lo * j->C, j->x + lo * j->C, j->w, j->s0 + lo, hi - lo, j->C);
}
static void ft__layernorm_fwd_rows(void *p, int64_t lo, int64_t hi) {
    ft__norm_job *j = FT__CAST(ft__norm_job *, p);
    ft__layernorm_forward(j->y + lo * j->C, j->s0 + lo, j->s1 + lo, j->x + lo * j->C, j->w, j->b, hi - lo, j->C, j->eps);
}
static void ft__layernorm_bwd_rows(void *p, int64_t lo, int64_t hi) {
    ft__norm_job *j = FT__CAST(ft__norm_job *, p);
    ft__layernorm_backward(j->dx + lo * j->C, NULL, NULL, j->dy + lo * j->C, j->x + lo * j->C, j->w, j->s0 + lo, j->s1 + lo, hi - lo, j->C);
}

static ft_tensor *ft__norm(ft_ctx *ctx, ft_op op, ft_tensor *x, ft_tensor *w, ft_tensor *b, float eps) {
    ft__norm_job j; ft_tensor *y; ft__node *nd; int64_t N, C;
    FT__IN(x); FT__F32(ctx, x, ft_op_name(op));
    C = x->shape[x->ndim - 1]; N = ft_nrows(x);
    if ((w && (ft_numel(w) != C || w->type != FT_TYPE_F32)) || (b && (ft_numel(b) != C || b->type != FT_TYPE_F32)))
        return ft__fail(ctx, FT_ERR_SHAPE, "%s: weight and bias must be f32 of %lld elements", ft_op_name(op), (long long)C);
    y = ft__like(ctx, x); FT__IN(y);
    memset(&j, 0, sizeof j);
    j.y = FT__F(y); j.x = FT__F(x); j.w = w ? FT__F(w) : NULL; j.b = b ? FT__F(b) : NULL; j.C = C; j.eps = eps;
    j.s0 = FT__CAST(float *, ft__arena_alloc(ctx, (size_t)N * sizeof(float)));
    j.s1 = FT__CAST(float *, ft__arena_alloc(ctx, (size_t)N * sizeof(float)));
    if (!j.s0 || !j.s1) return ft__fail(ctx, FT_ERR_NOMEM, "%s: arena out of memory", ft_op_name(op));
    ft__parallel(ctx, N, 8.0 * (double)N * (double)C, op == FT_OP_RMSNORM ? ft__rmsnorm_fwd_rows : ft__layernorm_fwd_rows, &j);
    if ((nd = ft__record(ctx, op, y, x, w, b)) != NULL) { nd->s0 = j.s0; nd->s1 = j.s1; nd->f[0] = eps; }
    return y;
}
static void ft__norm_backward(ft_ctx *ctx, ft__node *nd) {
    ft_tensor *x = nd->in[0], *w = nd->in[1], *b = nd->in[2];
    int64_t C = x->shape[x->ndim - 1], N = ft_nrows(x);
    ft__norm_job j;
    memset(&j, 0, sizeof j);
    j.x = FT__F(x); j.w = w ? FT__F(w) : NULL; j.dy = nd->out->grad; j.C = C; j.s0 = nd->s0; j.s1 = nd->s1;
    if (ft__wants(x)) {
        j.dx = ft__grad(ctx, x);
        if (!j.dx) return;
        ft__parallel(ctx, N, 8.0 * (double)N * (double)C, nd->op == FT_OP_RMSNORM ? ft__rmsnorm_bwd_rows : ft__layernorm_bwd_rows, &j);
    }
    if (nd->op == FT_OP_RMSNORM) {
        if (ft__wants(w) && ft__grad(ctx, w)) ft__rmsnorm_backward(NULL, w->grad, j.dy, j.x, j.w, j.s0, N, C);
    } else if ((ft__wants(w) && ft__grad(ctx, w)) || (ft__wants(b) && ft__grad(ctx, b)))
        ft__layernorm_backward(NULL, ft__wants(w) ? w->grad : NULL, ft__wants(b) ? b->grad : NULL,
                               j.dy, j.x, j.w, j.s0, j.s1, N, C);
}
FT_API ft_tensor *ft_rmsnorm(ft_ctx *ctx, ft_tensor *x, ft_tensor *w, float eps) { return ft__norm(ctx, FT_OP_RMSNORM, x, w, NULL, eps); }
FT_API ft_tensor *ft_layernorm(ft_ctx *ctx, ft_tensor *x, ft_tensor *w, ft_tensor *b, float eps) { return ft__norm(ctx, FT_OP_LAYERNORM, x, w, b, eps); }

/* ---- rope ------------------------------------------------------------------------------------------ */
typedef struct ft__rope_job { float *y, *cs; const float *x; const int32_t *pos; int64_t N, D; int n_head; float sign; ft_rope_opts o; } ft__rope_job;
static void ft__rope_task(void *p, int64_t lo, int64_t hi) {
    ft__rope_job *j = FT__CAST(ft__rope_job *, p);
    ft__rope_rows(j->y, j->x, j->cs, j->n_head, j->D, j->o.n_rot, j->o.mode, j->sign, lo, hi);
}
static void ft__rope_angles_task(void *p, int64_t lo, int64_t hi) {
    ft__rope_job *j = FT__CAST(ft__rope_job *, p);
    ft__rope_angles(j->cs, j->pos, &j->o, lo, hi);
}
/* the options with their defaults filled in */
static ft_rope_opts ft__rope_defaults(const ft_rope_opts *in) {
    ft_rope_opts o = *in;
    if (o.freq_scale == 0.0f) o.freq_scale = 1.0f;
    if (o.attn_factor == 0.0f) o.attn_factor = 1.0f;
    if (o.beta_fast == 0.0f) o.beta_fast = 32.0f;
    if (o.beta_slow == 0.0f) o.beta_slow = 1.0f;
    return o;
}
static int ft__rope_same(const ft__rope_cache *c, const ft__rope_job *j) {
    const ft_rope_opts *a = &c->o, *b = &j->o;
    if (!c->cs || c->N != j->N || a->n_rot != b->n_rot || a->base != b->base || a->freq_scale != b->freq_scale ||
        a->ext_factor != b->ext_factor || a->attn_factor != b->attn_factor || a->beta_fast != b->beta_fast ||
        a->beta_slow != b->beta_slow || a->n_ctx_orig != b->n_ctx_orig || !a->freq_factors != !b->freq_factors)
        return 0;
    if (b->freq_factors && memcmp(a->freq_factors, b->freq_factors, (size_t)(b->n_rot / 2) * sizeof(float))) return 0;
    return memcmp(c->pos, j->pos, (size_t)j->N * sizeof(int32_t)) == 0;
}
/* the angles for j->pos and j->o, kept in the context: every layer's q and k, forward and
   backward, use the same positions, so the sines and cosines are computed once per step (per
   option set), not 4 x layers times */
static int ft__rope_table(ft_ctx *ctx, ft__rope_job *j) {
    ft__rope_cache *c = &ctx->rope[0];
    size_t n = (size_t)(j->N * (j->o.n_rot / 2) * 2), nf = (size_t)(j->o.n_rot / 2);
    int k;
    for (k = 0; k < 2; k++)
        if (ft__rope_same(&ctx->rope[k], j)) { j->cs = ctx->rope[k].cs; ctx->rope[k].used = ++ctx->rope_clock; return 1; }
    if (ctx->rope[1].used < c->used) c = &ctx->rope[1];             /* the least recently used */
    if (c->cap < n || c->cap_pos < (size_t)j->N || (j->o.freq_factors && c->cap_ff < nf)) {
        FT_FREE(c->cs); FT_FREE(c->pos); FT_FREE(c->ff);
        c->cs = FT__CAST(float *, FT_MALLOC(FT__MAX(n, 1) * sizeof(float)));
        c->pos = FT__CAST(int32_t *, FT_MALLOC((size_t)j->N * sizeof(int32_t)));
        c->ff = FT__CAST(float *, FT_MALLOC(FT__MAX(nf, 1) * sizeof(float)));
        c->cap = c->cs ? FT__MAX(n, 1) : 0; c->cap_pos = c->pos ? (size_t)j->N : 0; c->cap_ff = c->ff ? FT__MAX(nf, 1) : 0;
        ctx->mallocs++;
        if (!c->cs || !c->pos || !c->ff) { c->N = 0; ft__fail(ctx, FT_ERR_NOMEM, "rope: out of memory for the angle table"); return 0; }
    }
    c->N = 0;                                    /* invalid until filled */
    j->cs = c->cs;
    ft__parallel(ctx, j->N, 40.0 * (double)n, ft__rope_angles_task, j);
    memcpy(c->pos, j->pos, (size_t)j->N * sizeof(int32_t));
    c->o = j->o;
    if (j->o.freq_factors) { memcpy(c->ff, j->o.freq_factors, nf * sizeof(float)); c->o.freq_factors = c->ff; }
    c->N = j->N; c->used = ++ctx->rope_clock;
    return 1;
}
FT_API ft_tensor *ft_rope_ext(ft_ctx *ctx, ft_tensor *x, const int32_t *pos, int n_head, const ft_rope_opts *opts) {
    ft__rope_job j; ft_tensor *y; ft__node *nd; int64_t C; ft_rope_opts *keep;
    FT__IN(x); FT__F32(ctx, x, "rope");
    C = x->shape[x->ndim - 1];
    j.o = ft__rope_defaults(opts);
    if (n_head < 1 || C % n_head || j.o.n_rot < 0 || j.o.n_rot % 2 || j.o.n_rot > C / n_head || (j.o.mode != FT_ROPE_NORM && j.o.mode != FT_ROPE_NEOX))
        return ft__fail(ctx, FT_ERR_SHAPE, "rope: %lld channels, %d heads, n_rot %d, mode %d do not fit", (long long)C, n_head, j.o.n_rot, j.o.mode);
    if (!(j.o.base > 0.0f) || !(j.o.freq_scale > 0.0f) || (j.o.ext_factor != 0.0f && j.o.n_ctx_orig < 1))
        return ft__fail(ctx, FT_ERR_INVALID, "rope: base %g, freq_scale %g, n_ctx_orig %lld", j.o.base, j.o.freq_scale, (long long)j.o.n_ctx_orig);
    y = ft__like(ctx, x); FT__IN(y);
    j.y = FT__F(y); j.x = FT__F(x); j.pos = pos; j.N = ft_nrows(x); j.D = C / n_head; j.n_head = n_head; j.sign = 1.0f;
    if (!ft__rope_table(ctx, &j)) return NULL;
    ft__parallel(ctx, j.N, 6.0 * (double)ft_numel(x), ft__rope_task, &j);
    if ((nd = ft__record(ctx, FT_OP_ROPE, y, x, NULL, NULL)) != NULL) {
        nd->ids = ft__copy_ids(ctx, pos, j.N);
        nd->n[0] = n_head; nd->n[1] = j.o.n_rot; nd->n[2] = j.o.mode; nd->f[0] = j.o.base;
        keep = FT__CAST(ft_rope_opts *, ft__arena_alloc(ctx, sizeof *keep + (size_t)(j.o.n_rot / 2) * sizeof(float)));
        if (!keep) return ft__fail(ctx, FT_ERR_NOMEM, "rope: arena out of memory");
        *keep = j.o;
        if (j.o.freq_factors) {             /* the factors travel with the node */
            float *ff = FT__CAST(float *, keep + 1);
            memcpy(ff, j.o.freq_factors, (size_t)(j.o.n_rot / 2) * sizeof(float));
            keep->freq_factors = ff;
        }
        nd->extra = keep;
    }
    return y;
}
FT_API ft_tensor *ft_rope(ft_ctx *ctx, ft_tensor *x, const int32_t *pos, int n_head, int n_rot, float base, int mode) {
    ft_rope_opts o;
    memset(&o, 0, sizeof o);
    o.n_rot = n_rot; o.mode = mode; o.base = base;
    return ft_rope_ext(ctx, x, pos, n_head, &o);
}
static void ft__rope_backward(ft_ctx *ctx, ft__node *nd) {           /* dx += R(-theta) dy */
    ft_tensor *x = nd->in[0]; ft__rope_job j; int64_t n = ft_numel(x); int fresh;
    float *dx = ft__grad_w(ctx, x, &fresh), *tmp = dx;
    if (dx && !fresh) tmp = FT__CAST(float *, ft__arena_alloc(ctx, (size_t)n * sizeof(float)));
    if (!dx || !tmp) { ft__fail(ctx, FT_ERR_NOMEM, "rope backward: arena out of memory"); return; }
    j.y = tmp; j.x = nd->out->grad; j.pos = nd->ids; j.N = ft_nrows(x); j.n_head = (int)nd->n[0];
    j.o = *FT__CAST(const ft_rope_opts *, nd->extra);
    j.D = x->shape[x->ndim - 1] / j.n_head; j.sign = -1.0f;
    if (!ft__rope_table(ctx, &j)) return;
    ft__parallel(ctx, j.N, 6.0 * (double)n, ft__rope_task, &j);
    if (!fresh) ft__grad_acc(ctx, x, tmp, 1.0f);          /* a gradient it had already: add */
}

/* ---- attention ----------------------------------------------------------------------------------- */
/* Runs the forward (over the blocks) or the backward (over the (b, g) pairs) on the pool, with
   per-thread scratch from the arena, given back after: the forward's S, Qs / O and 1 / row sums,
   the backward's W, dS and Qs, dO, dQ. 0 when the arena is out of memory. */
static int ft__attn_run(ft_ctx *ctx, ft__attn *a, int backward) {
    ft__arena_mark mk = ft__arena_mark_get(ctx);
    int64_t qb = ft__attn_qb(a), R = a->H / a->Hkv * qb;
    int64_t n_tasks = backward ? a->B * a->Hkv : a->B * a->Hkv * ((a->T + qb - 1) / qb);
    int nth = (int)FT__MAX(1, FT__MIN((int64_t)ft__pool_size(&ctx->pool), n_tasks));
    a->scratch_n = ft__attn_pad(R * (backward ? 2 * ft__attn_pad(a->P + a->Tk) + 3 * a->D : ft__attn_pad(a->P + a->Tk) + a->D + 1));
    a->scratch = FT__CAST(float *, ft__arena_alloc(ctx, (size_t)nth * (size_t)a->scratch_n * sizeof(float)));
    if (!a->scratch) { ft__fail(ctx, FT_ERR_NOMEM, "attention: arena out of memory"); return 0; }
    a->pool = &ctx->pool;
    ft__pool_run_n(&ctx->pool, nth, backward ? ft__attn_backward_task : ft__attn_forward_task, a);
    ft__arena_rewind(ctx, &mk);
    a->scratch = NULL; a->pool = NULL;
    return 1;
}
FT_API ft_tensor *ft_attention(ft_ctx *ctx, ft_tensor *q, ft_tensor *k, ft_tensor *v, const ft_attn_opts *o) {
    ft__attn a; ft_tensor *y; ft__node *nd; int64_t P = 0;
    FT__IN(q); FT__IN(k); FT__IN(v);
    FT__F32(ctx, q, "attention"); FT__F32(ctx, k, "attention"); FT__F32(ctx, v, "attention");
    if (q->ndim != 3 || k->ndim != 3 || !ft_same_shape(k, v) || o->n_head < 1 || o->n_head_kv < 1 ||
        o->n_head % o->n_head_kv || q->shape[2] % o->n_head || q->shape[0] != k->shape[0] ||
        k->shape[2] != q->shape[2] / o->n_head * o->n_head_kv)
        return ft__fail(ctx, FT_ERR_SHAPE, "attention: q (B,T,H*D), k and v (B,Tk,Hkv*D) with %d/%d heads do not fit", o->n_head, o->n_head_kv);
    if (o->prefix_k || o->prefix_v) {
        if (!o->prefix_k || !o->prefix_v || !ft_same_shape(o->prefix_k, o->prefix_v) || o->prefix_k->ndim != 2 ||
            o->prefix_k->shape[1] != k->shape[2] || o->prefix_k->type != FT_TYPE_F32 || o->prefix_v->type != FT_TYPE_F32)
            return ft__fail(ctx, FT_ERR_SHAPE, "attention: prefix k and v must both be f32 (P, Hkv*D)");
        P = o->prefix_k->shape[0];
    }
    if (o->seg && (k->shape[1] != q->shape[1] || o->q_offset != 0 || o->q_offsets))
        return ft__fail(ctx, FT_ERR_SHAPE, "attention: segments need Tk == T and no KV cache offset");
    y = ft__like(ctx, q); FT__IN(y);
    memset(&a, 0, sizeof a);
    a.B = q->shape[0]; a.T = q->shape[1]; a.Tk = k->shape[1]; a.P = P; a.H = o->n_head; a.Hkv = o->n_head_kv;
    a.D = q->shape[2] / o->n_head; a.q_offset = o->q_offset; a.causal = o->causal; a.window = FT__MAX(o->window, 0);
    if (o->q_offsets) {                     /* copied: the caller's array may not outlive the op */
        int64_t *qo = FT__CAST(int64_t *, ft__arena_alloc(ctx, (size_t)a.B * sizeof(int64_t)));
        if (!qo) return ft__fail(ctx, FT_ERR_NOMEM, "attention: arena out of memory");
        memcpy(qo, o->q_offsets, (size_t)a.B * sizeof(int64_t));
        a.q_offsets = qo;
    }
    a.scale = o->scale != 0.0f ? o->scale : 1.0f / sqrtf((float)a.D);
    a.q = FT__F(q); a.k = FT__F(k); a.v = FT__F(v);
    a.pk = P ? FT__F(o->prefix_k) : NULL; a.pv = P ? FT__F(o->prefix_v) : NULL;
    a.o = FT__F(y);
    a.l = FT__CAST(float *, ft__arena_alloc(ctx, (size_t)(a.B * a.H * a.T) * sizeof(float)));
    if (!a.l) return ft__fail(ctx, FT_ERR_NOMEM, "attention: arena out of memory");
    if (o->seg) { a.seg = ft__copy_ids(ctx, o->seg, a.B * a.T); FT__IN(a.seg); }
    if (!ft__attn_run(ctx, &a, 0)) return NULL;
    nd = ft__record_x(ctx, FT_OP_ATTENTION, y, q, k, v, P && (ft__wants(o->prefix_k) || ft__wants(o->prefix_v)));
    if (nd) {
        ft__attn *keep = FT__CAST(ft__attn *, ft__arena_alloc(ctx, sizeof a));
        ft_tensor **pre = FT__CAST(ft_tensor **, ft__arena_alloc(ctx, 2 * sizeof(ft_tensor *)));
        if (!keep || !pre) return ft__fail(ctx, FT_ERR_NOMEM, "attention: arena out of memory");
        *keep = a; keep->out = a.o; keep->lse = a.l;
        pre[0] = P ? o->prefix_k : NULL; pre[1] = P ? o->prefix_v : NULL;
        nd->extra = keep; nd->s0 = FT__CAST(float *, FT__CAST(void *, pre));
    }
    return y;
}
static void ft__attention_backward(ft_ctx *ctx, ft__node *nd) {
    ft__attn a = *FT__CAST(ft__attn *, nd->extra);
    ft_tensor **pre = FT__CAST(ft_tensor **, FT__CAST(void *, nd->s0));
    int64_t i, r, n;
    a.dout = nd->out->grad;
    a.dq = ft__wants(nd->in[0]) ? ft__grad(ctx, nd->in[0]) : NULL;
    a.dk = ft__wants(nd->in[1]) ? ft__grad(ctx, nd->in[1]) : NULL;
    a.dv = ft__wants(nd->in[2]) ? ft__grad(ctx, nd->in[2]) : NULL;
    n = a.B * a.Hkv * a.P * a.D;                 /* per-(b, kv head) partials for the prefix */
    a.dpk = a.P && ft__wants(pre[0]) ? FT__CAST(float *, ft__arena_zalloc(ctx, (size_t)FT__MAX(n, 1) * sizeof(float))) : NULL;
    a.dpv = a.P && ft__wants(pre[1]) ? FT__CAST(float *, ft__arena_zalloc(ctx, (size_t)FT__MAX(n, 1) * sizeof(float))) : NULL;
    if (ctx->status != FT_OK || !ft__attn_run(ctx, &a, 1)) return;
    for (i = 0; i < 2; i++) {                    /* reduce the partials in a fixed order      */
        float *part = i ? a.dpv : a.dpk, *dst;
        int64_t bg, ks = a.Hkv * a.D;
        if (!part || !(dst = ft__grad(ctx, pre[i]))) continue;
        for (bg = 0; bg < a.B * a.Hkv; bg++)
            for (r = 0; r < a.P; r++)
                ft__vec_axpy(a.D, 1.0f, part + (bg * a.P + r) * a.D, dst + r * ks + (bg % a.Hkv) * a.D);
    }
}

/* ---- softmax, log-softmax ---------------------------------------------------------------------------- */
typedef struct ft__row_job { float *y, *dx; const float *x, *dy; int64_t C; } ft__row_job;
static void ft__softmax_rows(void *p, int64_t lo, int64_t hi) {
    ft__row_job *j = FT__CAST(ft__row_job *, p); int64_t i;
    for (i = lo; i < hi; i++) {
        const float *x = j->x + i * j->C; float *y = j->y + i * j->C;
        float m = ft__vec_max(j->C, x), s = ft__vec_exp(j->C, y, x, m);
        ft__vec_scale(j->C, y, 1.0f / s, y);
    }
}
static void ft__log_softmax_rows(void *p, int64_t lo, int64_t hi) {
    ft__row_job *j = FT__CAST(ft__row_job *, p); int64_t i, c;
    for (i = lo; i < hi; i++) {
        const float *x = j->x + i * j->C; float *y = j->y + i * j->C;
        float m = ft__vec_max(j->C, x), lse = m + logf(ft__vec_expsum(j->C, x, m));
        for (c = 0; c < j->C; c++) y[c] = x[c] - lse;
    }
}
/* softmax: dx += y (dy - <dy, y>);  log-softmax: dx += dy - e^y sum(dy) */
static void ft__softmax_back_rows(void *p, int64_t lo, int64_t hi) {
    ft__row_job *j = FT__CAST(ft__row_job *, p); int64_t i, c;
    for (i = lo; i < hi; i++) {
        const float *y = j->y + i * j->C, *dy = j->dy + i * j->C; float *dx = j->dx + i * j->C;
        float s = ft__vec_dot(j->C, dy, y);
        for (c = 0; c < j->C; c++) dx[c] += y[c] * (dy[c] - s);
    }
}
static void ft__log_softmax_back_rows(void *p, int64_t lo, int64_t hi) {
    ft__row_job *j = FT__CAST(ft__row_job *, p); int64_t i, c;
    for (i = lo; i < hi; i++) {
        const float *y = j->y + i * j->C, *dy = j->dy + i * j->C; float *dx = j->dx + i * j->C;
        float s = ft__vec_sum(j->C, dy);
        for (c = 0; c < j->C; c++) dx[c] += dy[c] - expf(y[c]) * s;
    }
}
static ft_tensor *ft__softmax_op(ft_ctx *ctx, ft_op op, ft_tensor *x) {
    ft__row_job j; ft_tensor *y;
    FT__IN(x); FT__F32(ctx, x, ft_op_name(op));
    y = ft__like(ctx, x); FT__IN(y);
    j.x = FT__F(x); j.y = FT__F(y); j.C = x->shape[x->ndim - 1]; j.dx = NULL; j.dy = NULL;
    ft__parallel(ctx, ft_nrows(x), 10.0 * (double)ft_numel(x), op == FT_OP_SOFTMAX ? ft__softmax_rows : ft__log_softmax_rows, &j);
    ft__record(ctx, op, y, x, NULL, NULL);
    return y;
}
static void ft__softmax_backward(ft_ctx *ctx, ft__node *nd) {
    ft__row_job j; ft_tensor *x = nd->in[0];
    j.x = FT__F(x); j.y = FT__F(nd->out); j.dy = nd->out->grad; j.C = x->shape[x->ndim - 1];
    if (!(j.dx = ft__grad(ctx, x))) return;
    ft__parallel(ctx, ft_nrows(x), 10.0 * (double)ft_numel(x), nd->op == FT_OP_SOFTMAX ? ft__softmax_back_rows : ft__log_softmax_back_rows, &j);
}
FT_API ft_tensor *ft_softmax(ft_ctx *ctx, ft_tensor *x) { return ft__softmax_op(ctx, FT_OP_SOFTMAX, x); }
FT_API ft_tensor *ft_log_softmax(ft_ctx *ctx, ft_tensor *x) { return ft__softmax_op(ctx, FT_OP_LOG_SOFTMAX, x); }

/* ---- unary elementwise ---------------------------------------------------------------------------------- */
static float ft__sigmoidf(float x) { return x >= 0 ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x)); }

typedef struct ft__unary_job { ft_op op; float *y, *dx; const float *x, *dy; float lo, hi; } ft__unary_job;
static void ft__unary_fwd(void *p, int64_t lo, int64_t hi) {
    ft__unary_job *j = FT__CAST(ft__unary_job *, p);
    const float *x = j->x; float *y = j->y; int64_t i;
    switch (j->op) {
    case FT_OP_SILU: ft__vec_silu(hi - lo, y + lo, x + lo); break;
    case FT_OP_EXP:  for (i = lo; i < hi; i++) y[i] = expf(x[i]); break;
    case FT_OP_GELU: for (i = lo; i < hi; i++) y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f)); break;
    case FT_OP_GELU_TANH: for (i = lo; i < hi; i++) y[i] = 0.5f * x[i] * (1.0f + tanhf(0.79788456080286536f * (x[i] + 0.044715f * x[i] * x[i] * x[i]))); break;
    case FT_OP_TANH: for (i = lo; i < hi; i++) y[i] = tanhf(x[i]); break;
    case FT_OP_RELU: for (i = lo; i < hi; i++) y[i] = x[i] > 0 ? x[i] : 0.0f; break;
    case FT_OP_SIGMOID: for (i = lo; i < hi; i++) y[i] = ft__sigmoidf(x[i]); break;
    case FT_OP_LOGSIGMOID: for (i = lo; i < hi; i++) y[i] = FT__MIN(x[i], 0.0f) - log1pf(expf(-fabsf(x[i]))); break;
    case FT_OP_LOG:  for (i = lo; i < hi; i++) y[i] = logf(x[i]); break;
    case FT_OP_LOG1MEXP:                        /* log(1 - e^x), x < 0, two stable regimes */
        for (i = lo; i < hi; i++) y[i] = x[i] > -0.6931472f ? logf(-expm1f(x[i])) : log1pf(-expf(x[i]));
        break;
    case FT_OP_CLAMP: for (i = lo; i < hi; i++) y[i] = x[i] < j->lo ? j->lo : x[i] > j->hi ? j->hi : x[i]; break;
    default: break;
    }
}
/* dx += dy * f'(x), from x and y = f(x) */
static void ft__unary_bwd(void *p, int64_t lo, int64_t hi) {
    ft__unary_job *j = FT__CAST(ft__unary_job *, p);
    const float *x = j->x, *y = j->y, *dy = j->dy; float *dx = j->dx; int64_t i;
    for (i = lo; i < hi; i++) {
        float d = 0;
        switch (j->op) {
        case FT_OP_SILU: { float s = ft__sigmoidf(x[i]); d = s * (1.0f + x[i] * (1.0f - s)); break; }
        case FT_OP_EXP:  d = y[i]; break;
        case FT_OP_GELU: d = 0.5f * (1.0f + erff(x[i] * 0.70710678118654752f)) + x[i] * 0.39894228040143268f * expf(-0.5f * x[i] * x[i]); break;
        case FT_OP_GELU_TANH: {
            float t = tanhf(0.79788456080286536f * (x[i] + 0.044715f * x[i] * x[i] * x[i]));
            d = 0.5f * (1.0f + t) + 0.5f * x[i] * (1.0f - t * t) * 0.79788456080286536f * (1.0f + 0.134145f * x[i] * x[i]);
            break;
        }
        case FT_OP_TANH: d = 1.0f - y[i] * y[i]; break;
        case FT_OP_RELU: d = x[i] > 0 ? 1.0f : 0.0f; break;
        case FT_OP_SIGMOID: d = y[i] * (1.0f - y[i]); break;
        case FT_OP_LOGSIGMOID: d = ft__sigmoidf(-x[i]); break;
        case FT_OP_LOG:  d = 1.0f / x[i]; break;
        case FT_OP_LOG1MEXP: d = -1.0f / expm1f(-x[i]); break;          /* -e^x / (1 - e^x) */
        case FT_OP_CLAMP: d = x[i] >= j->lo && x[i] <= j->hi ? 1.0f : 0.0f; break;
        default: break;
        }
        dx[i] += dy[i] * d;
    }
}
static ft_tensor *ft__unary(ft_ctx *ctx, ft_op op, ft_tensor *x, float lo, float hi) {
    ft__unary_job j; ft_tensor *y; ft__node *nd;
    FT__IN(x); FT__F32(ctx, x, ft_op_name(op));
    y = ft__like(ctx, x); FT__IN(y);
    j.op = op; j.x = FT__F(x); j.y = FT__F(y); j.lo = lo; j.hi = hi; j.dx = NULL; j.dy = NULL;
    ft__parallel(ctx, ft_numel(x), 20.0 * (double)ft_numel(x), ft__unary_fwd, &j);
    if ((nd = ft__record(ctx, op, y, x, NULL, NULL)) != NULL) { nd->f[0] = lo; nd->f[1] = hi; }
    return y;
}
static void ft__unary_backward(ft_ctx *ctx, ft__node *nd) {
    ft__unary_job j; ft_tensor *x = nd->in[0];
    j.op = nd->op; j.x = FT__F(x); j.y = FT__F(nd->out); j.dy = nd->out->grad; j.lo = nd->f[0]; j.hi = nd->f[1];
    if (!(j.dx = ft__grad(ctx, x))) return;
    ft__parallel(ctx, ft_numel(x), 20.0 * (double)ft_numel(x), ft__unary_bwd, &j);
}
FT_API ft_tensor *ft_silu(ft_ctx *ctx, ft_tensor *x) { return ft__unary(ctx, FT_OP_SILU, x, 0, 0); }
FT_API ft_tensor *ft_gelu(ft_ctx *ctx, ft_tensor *x) { return ft__unary(ctx, FT_OP_GELU, x, 0, 0); }
FT_API ft_tensor *ft_gelu_tanh(ft_ctx *ctx, ft_tensor *x) { return ft__unary(ctx, FT_OP_GELU_TANH, x, 0, 0); }
FT_API ft_tensor *ft_tanh(ft_ctx *ctx, ft_tensor *x) { return ft__unary(ctx, FT_OP_TANH, x, 0, 0); }
FT_API ft_tensor *ft_relu(ft_ctx *ctx, ft_tensor *x) { return ft__unary(ctx, FT_OP_RELU, x, 0, 0); }
FT_API ft_tensor *ft_sigmoid(ft_ctx *ctx, ft_tensor *x) { return ft__unary(ctx, FT_OP_SIGMOID, x, 0, 0); }
FT_API ft_tensor *ft_logsigmoid(ft_ctx *ctx, ft_tensor *x) { return ft__unary(ctx, FT_OP_LOGSIGMOID, x, 0, 0); }
FT_API ft_tensor *ft_exp(ft_ctx *ctx, ft_tensor *x) { return ft__unary(ctx, FT_OP_EXP, x, 0, 0); }
FT_API ft_tensor *ft_log(ft_ctx *ctx, ft_tensor *x) { return ft__unary(ctx, FT_OP_LOG, x, 0, 0); }
FT_API ft_tensor *ft_log1mexp(ft_ctx *ctx, ft_tensor *x) { return ft__unary(ctx, FT_OP_LOG1MEXP, x, 0, 0); }
FT_API ft_tensor *ft_clamp(ft_ctx *ctx, ft_tensor *x, float lo, float hi) { return ft__unary(ctx, FT_OP_CLAMP, x, lo, hi); }

/* ---- swiglu: y = silu(g) * u ------------------------------------------------------------------------------ */
FT_API ft_tensor *ft_swiglu(ft_ctx *ctx, ft_tensor *g, ft_tensor *u) {
    ft_tensor *y; ft__ew e;
    FT__IN(g); FT__IN(u); FT__F32(ctx, g, "swiglu"); FT__F32(ctx, u, "swiglu");
    if (!ft_same_shape(g, u)) return ft__fail(ctx, FT_ERR_SHAPE, "swiglu: gate and up differ in shape");
    y = ft__like(ctx, g); FT__IN(y);
    memset(&e, 0, sizeof e);
    e.kind = FT__EW_SWIGLU; e.n = ft_numel(g); e.a = FT__F(g); e.b = FT__F(u); e.y = FT__F(y);
    ft__ew_run(ctx, &e, 20.0);
    ft__record(ctx, FT_OP_SWIGLU, y, g, u, NULL);
    return y;
}
static void ft__swiglu_backward(ft_ctx *ctx, ft__node *nd) {
    ft_tensor *g = nd->in[0], *u = nd->in[1]; ft__ew e;
    memset(&e, 0, sizeof e);
    e.kind = FT__EW_SWIGLU_BACK; e.n = ft_numel(g); e.a = FT__F(g); e.b = FT__F(u); e.c = nd->out->grad;
    if (ft__wants(g) && !(e.y = ft__grad_w(ctx, g, &e.fresh))) return;
    if (ft__wants(u) && !(e.y2 = ft__grad_w(ctx, u, &e.fresh2))) return;
    ft__ew_run(ctx, &e, 30.0);
}

/* ---- embedding ------------------------------------------------------------------------------------------------ */
FT_API ft_tensor *ft_embedding(ft_ctx *ctx, ft_tensor *table, const int32_t *ids, int64_t n) {
    ft_tensor *y; ft__node *nd; int64_t i, V, C;
    FT__IN(table);
    if (table->ndim != 2) return ft__fail(ctx, FT_ERR_SHAPE, "embedding: table must be (V, C)");
    V = table->shape[0]; C = table->shape[1];
    if (!ft__weight_decodable(table, C)) return ft__fail(ctx, FT_ERR_UNSUPPORTED, "embedding: table of type %s", ft_type_name(table->type));
    if (table->type != FT_TYPE_F32 && ft__wants(table)) return ft__fail(ctx, FT_ERR_UNSUPPORTED, "embedding: a %s table cannot take a gradient", ft_type_name(table->type));
    y = ft_tensor_2d(ctx, n, C); FT__IN(y);
    for (i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= V) return ft__fail(ctx, FT_ERR_INVALID, "embedding: id %d at position %lld is outside the vocabulary (%lld)", (int)ids[i], (long long)i, (long long)V);
        ft__weight_row(table, ids[i], 0, C, FT__F(y) + i * C);
    }
    if ((nd = ft__record(ctx, FT_OP_EMBEDDING, y, table, NULL, NULL)) != NULL) nd->ids = ft__copy_ids(ctx, ids, n);
    return y;
}
static void ft__embedding_backward(ft_ctx *ctx, ft__node *nd) {     /* scatter-add, in order */
    ft_tensor *t = nd->in[0]; int64_t i, n = nd->out->shape[0], C = t->shape[1];
    float *dT = ft__grad(ctx, t);
    if (!dT) return;
    for (i = 0; i < n; i++) ft__vec_axpy(C, 1.0f, nd->out->grad + i * C, dT + (int64_t)nd->ids[i] * C);
}

/* ---- mixture-of-experts combine ------------------------------------------------------------------ */
typedef struct ft__moe_comb { ft_tensor **ys; int n_exp; int32_t *sel, *row; } ft__moe_comb;
FT_API ft_tensor *ft_moe_combine(ft_ctx *ctx, ft_tensor *const *ys, int n_exp, const int32_t *sel, const int32_t *row, ft_tensor *w) {
    int64_t N, k, C = -1, n, j; int e, any = 0; ft_tensor *y; ft__node *nd; ft__moe_comb *keep;
    FT__IN(w); FT__F32(ctx, w, "moe_combine");
    if (w->ndim != 2 || n_exp < 1) return ft__fail(ctx, FT_ERR_SHAPE, "moe_combine: w must be (N, k)");
    N = w->shape[0]; k = w->shape[1];
    for (e = 0; e < n_exp; e++) {
        if (!ys[e]) continue;
        if (ys[e]->ndim != 2 || ys[e]->type != FT_TYPE_F32 || (C >= 0 && ys[e]->shape[1] != C))
            return ft__fail(ctx, FT_ERR_SHAPE, "moe_combine: expert %d's output is not (n, C) f32", e);
        C = ys[e]->shape[1]; any |= ft__wants(ys[e]);
    }
    for (n = 0; n < N * k; n++)
        if (sel[n] < 0 || sel[n] >= n_exp || !ys[sel[n]] || row[n] < 0 || row[n] >= ys[sel[n]]->shape[0])
            return ft__fail(ctx, FT_ERR_INVALID, "moe_combine: slot %lld names expert %d row %d, which is not there", (long long)n, (int)sel[n], (int)row[n]);
    if (C < 0) return ft__fail(ctx, FT_ERR_SHAPE, "moe_combine: no expert output");
    y = ft_tensor_2d(ctx, N, C); FT__IN(y);
    memset(y->data, 0, (size_t)(N * C) * sizeof(float));
    for (n = 0; n < N; n++)
        for (j = 0; j < k; j++)
            ft__vec_axpy(C, FT__F(w)[n * k + j], FT__F(ys[sel[n * k + j]]) + (int64_t)row[n * k + j] * C, FT__F(y) + n * C);
    if ((nd = ft__record_x(ctx, FT_OP_MOE_COMBINE, y, w, NULL, NULL, any)) != NULL) {
        keep = FT__CAST(ft__moe_comb *, ft__arena_alloc(ctx, sizeof *keep));
        if (!keep || !(keep->ys = FT__CAST(ft_tensor **, ft__arena_alloc(ctx, (size_t)n_exp * sizeof(ft_tensor *)))))
            return ft__fail(ctx, FT_ERR_NOMEM, "moe_combine: arena out of memory");
        memcpy(keep->ys, ys, (size_t)n_exp * sizeof(ft_tensor *));
        keep->n_exp = n_exp;
        keep->sel = ft__copy_ids(ctx, sel, N * k); keep->row = ft__copy_ids(ctx, row, N * k);
        if (!keep->sel || !keep->row) return NULL;
        nd->extra = keep;
    }
    return y;
}
/* dys[e][row] += w[n, j] dy[n];  dw[n, j] += ys[e][row] . dy[n] */
static void ft__moe_combine_backward(ft_ctx *ctx, ft__node *nd) {
    const ft__moe_comb *mc = FT__CAST(const ft__moe_comb *, nd->extra);
    ft_tensor *w = nd->in[0]; int64_t N = w->shape[0], k = w->shape[1], C = nd->out->shape[1], n;
    const float *dy = nd->out->grad; float *dw = ft__wants(w) ? ft__grad(ctx, w) : NULL;
    for (n = 0; n < N * k; n++) {
        ft_tensor *ye = mc->ys[mc->sel[n]];
        const float *yr = FT__F(ye) + (int64_t)mc->row[n] * C, *g = dy + n / k * C;
        if (dw) dw[n] += ft__vec_dot(C, yr, g);
        if (ft__wants(ye)) {
            float *dye = ft__grad(ctx, ye);
            if (!dye) return;
            ft__vec_axpy(C, FT__F(w)[n], g, dye + (int64_t)mc->row[n] * C);
        }
    }
}

/* ---- cross-entropy and per-token log-probs -------------------------------------------------------------------- */
static ft_tensor *ft__xent_op(ft_ctx *ctx, ft_op op, ft_tensor *logits, const int32_t *tgt, int32_t ignore) {
    ft__xent e; ft_tensor *y; ft__node *nd; int64_t N, V, i, nvalid = 0; double loss = 0;
    FT__IN(logits); FT__F32(ctx, logits, ft_op_name(op));
    if (logits->ndim != 2) return ft__fail(ctx, FT_ERR_SHAPE, "%s: logits must be (N, V)", ft_op_name(op));
    N = logits->shape[0]; V = logits->shape[1];
    for (i = 0; i < N; i++)
        if (tgt[i] != ignore && (tgt[i] < 0 || tgt[i] >= V))
            return ft__fail(ctx, FT_ERR_INVALID, "%s: target %d at row %lld is outside [0, %lld)", ft_op_name(op), (int)tgt[i], (long long)i, (long long)V);
    y = op == FT_OP_CROSS_ENTROPY ? ft_tensor_1d(ctx, 1) : ft_tensor_1d(ctx, N); FT__IN(y);
    memset(&e, 0, sizeof e);
    e.x = FT__F(logits); e.tgt = tgt; e.ignore = ignore; e.V = V;
    e.lse = FT__CAST(float *, ft__arena_alloc(ctx, (size_t)N * sizeof(float)));
    if (!e.lse) return ft__fail(ctx, FT_ERR_NOMEM, "%s: arena out of memory", ft_op_name(op));
    ft__parallel(ctx, N, 4.0 * (double)N * (double)V, ft__xent_forward_rows, &e);
    for (i = 0; i < N; i++) {
        float lp = tgt[i] == ignore ? 0.0f : e.x[i * V + tgt[i]] - e.lse[i];
        if (tgt[i] != ignore) { nvalid++; loss -= lp; }
        if (op == FT_OP_LOGPROB) FT__F(y)[i] = lp;
    }
    if (op == FT_OP_CROSS_ENTROPY) FT__F(y)[0] = nvalid ? (float)(loss / (double)nvalid) : 0.0f;
    if ((nd = ft__record(ctx, op, y, logits, NULL, NULL)) != NULL) {
        nd->ids = ft__copy_ids(ctx, tgt, N); nd->s0 = e.lse; nd->n[0] = ignore; nd->n[1] = nvalid;
    }
    return y;
}
/* g (N) = d loss / d logp_i: -dy/n for the mean loss (n = the node's count of targets), dy_i for log-probs */
static void ft__xent_upstream(const ft__node *nd, int mean, int64_t N, float *g) {
    int64_t i;
    for (i = 0; i < N; i++) g[i] = mean ? (nd->n[1] ? -nd->out->grad[0] / (float)nd->n[1] : 0.0f) : nd->out->grad[i];
}
static void ft__xent_backward(ft_ctx *ctx, ft__node *nd) {
    ft_tensor *x = nd->in[0]; ft__xent e; int64_t N = x->shape[0];
    float *g = FT__CAST(float *, ft__arena_alloc(ctx, (size_t)N * sizeof(float)));
    memset(&e, 0, sizeof e);
    e.x = FT__F(x); e.tgt = nd->ids; e.ignore = (int32_t)nd->n[0]; e.V = x->shape[1]; e.lse = nd->s0;
    e.dx = ft__grad(ctx, x);
    if (!g || !e.dx) { ft__fail(ctx, FT_ERR_NOMEM, "cross-entropy backward: arena out of memory"); return; }
    ft__xent_upstream(nd, nd->op == FT_OP_CROSS_ENTROPY, N, g);
    e.g = g;
    ft__parallel(ctx, N, 4.0 * (double)N * (double)e.V, ft__xent_backward_rows, &e);
}
FT_API ft_tensor *ft_cross_entropy(ft_ctx *ctx, ft_tensor *logits, const int32_t *targets, int32_t ignore_index) { return ft__xent_op(ctx, FT_OP_CROSS_ENTROPY, logits, targets, ignore_index); }
FT_API ft_tensor *ft_logprob(ft_ctx *ctx, ft_tensor *logits, const int32_t *targets, int32_t ignore_index) { return ft__xent_op(ctx, FT_OP_LOGPROB, logits, targets, ignore_index); }

/* ---- the head and cross-entropy, chunked (ft_linear_cross_entropy) ---------------------------- */
static int64_t ft__lxent_rows(int64_t V) { return FT__MAX(1, FT__MIN(256, ((int64_t)4 << 20) / FT__MAX(V, 1))); }  /* <= 16 MiB */
/* z (n, V) = the capped logits of rows h (n, C) */
static void ft__lxent_logits(ft_ctx *ctx, const float *h, int64_t n, const ft_tensor *W, float cap, float *z) {
    int64_t C = W->shape[1], V = W->shape[0], i;
    if (W->type == FT_TYPE_F32) ft_gemm(ctx, 0, 1, n, V, C, h, C, FT__F(W), C, z, V, 0);
    else ft__matmul_wt(ctx, n, V, C, h, W, z);
    if (cap > 0.0f) for (i = 0; i < n * V; i++) z[i] = cap * tanhf(z[i] / cap);
}
FT_API ft_tensor *ft_linear_cross_entropy(ft_ctx *ctx, ft_tensor *h, ft_tensor *W, const int32_t *tgt, int32_t ignore, float cap, int per_token) {
    int64_t N, C, V, R, r0, i, nvalid = 0; ft_tensor *y; ft__node *nd; ft__xent e; float *z, *lse; double loss = 0;
    ft__arena_mark mk;
    FT__IN(h); FT__IN(W); FT__F32(ctx, h, "linear_xent");
    if (h->ndim != 2 || W->ndim != 2 || h->shape[1] != W->shape[1]) return ft__fail(ctx, FT_ERR_SHAPE, "linear_xent: h (N, C) and W (V, C) do not fit");
    if (W->type != FT_TYPE_F32 && (ft__wants(W) || !ft__weight_decodable(W, W->shape[1]))) return ft__fail(ctx, FT_ERR_UNSUPPORTED, "linear_xent: a %s head cannot be used here", ft_type_name(W->type));
    N = h->shape[0]; C = h->shape[1]; V = W->shape[0]; R = ft__lxent_rows(V);
    for (i = 0; i < N; i++)
        if (tgt[i] != ignore && (tgt[i] < 0 || tgt[i] >= V)) return ft__fail(ctx, FT_ERR_INVALID, "linear_xent: target %d at row %lld is outside [0, %lld)", (int)tgt[i], (long long)i, (long long)V);
    y = per_token ? ft_tensor_1d(ctx, N) : ft_tensor_1d(ctx, 1); FT__IN(y);
    memset(&e, 0, sizeof e);
    e.ignore = ignore; e.V = V;
    lse = FT__CAST(float *, ft__arena_alloc(ctx, (size_t)N * sizeof(float)));
    mk = ft__arena_mark_get(ctx);
    z = FT__CAST(float *, ft__arena_alloc(ctx, (size_t)(R * V) * sizeof(float)));
    if (!lse || !z) return ft__fail(ctx, FT_ERR_NOMEM, "linear_xent: arena out of memory");
    for (r0 = 0; r0 < N; r0 += R) {
        int64_t n = FT__MIN(R, N - r0);
        ft__lxent_logits(ctx, FT__F(h) + r0 * C, n, W, cap, z);
        e.x = z; e.tgt = tgt + r0; e.lse = lse + r0;
        ft__parallel(ctx, n, 4.0 * (double)n * (double)V, ft__xent_forward_rows, &e);
        for (i = 0; i < n; i++) {
            float lp = tgt[r0 + i] == ignore ? 0.0f : z[i * V + tgt[r0 + i]] - lse[r0 + i];
            if (tgt[r0 + i] != ignore) { nvalid++; loss -= lp; }
            if (per_token) FT__F(y)[r0 + i] = lp;
        }
    }
    ft__arena_rewind(ctx, &mk);
    if (!per_token) FT__F(y)[0] = nvalid ? (float)(loss / (double)nvalid) : 0.0f;
    if ((nd = ft__record(ctx, FT_OP_LINEAR_XENT, y, h, W, NULL)) != NULL) {
        nd->ids = ft__copy_ids(ctx, tgt, N); nd->s0 = lse; nd->n[0] = ignore; nd->n[1] = nvalid; nd->n[2] = per_token; nd->f[0] = cap;
    }
    return y;
}
/* chunk by chunk: the logits again, dz = g (onehot - softmax) (times the cap's 1 - (z/cap)^2),
   dh += dz W, dW += dz^T h */
static void ft__lxent_backward(ft_ctx *ctx, ft__node *nd) {
    ft_tensor *h = nd->in[0], *W = nd->in[1]; ft__xent e; ft__arena_mark mk;
    int64_t N = h->shape[0], C = h->shape[1], V = W->shape[0], R = ft__lxent_rows(V), r0, i; float cap = nd->f[0];
    float *dh = ft__wants(h) ? ft__grad(ctx, h) : NULL, *dW = ft__wants(W) ? ft__grad(ctx, W) : NULL, *z, *dz, *g;
    mk = ft__arena_mark_get(ctx);
    z = FT__CAST(float *, ft__arena_alloc(ctx, (size_t)(R * V) * sizeof(float)));
    dz = FT__CAST(float *, ft__arena_alloc(ctx, (size_t)(R * V) * sizeof(float)));
    g = FT__CAST(float *, ft__arena_alloc(ctx, (size_t)N * sizeof(float)));
    if (!z || !dz || !g || (ft__wants(h) && !dh) || (ft__wants(W) && !dW)) { ft__fail(ctx, FT_ERR_NOMEM, "linear_xent backward: arena out of memory"); return; }
    ft__xent_upstream(nd, !nd->n[2], N, g);
    memset(&e, 0, sizeof e);
    e.ignore = (int32_t)nd->n[0]; e.V = V;
    for (r0 = 0; r0 < N; r0 += R) {
        int64_t n = FT__MIN(R, N - r0);
        ft__lxent_logits(ctx, FT__F(h) + r0 * C, n, W, cap, z);
        memset(dz, 0, (size_t)(n * V) * sizeof(float));
        e.x = z; e.tgt = nd->ids + r0; e.lse = nd->s0 + r0; e.dx = dz; e.g = g + r0;
        ft__parallel(ctx, n, 4.0 * (double)n * (double)V, ft__xent_backward_rows, &e);
        if (cap > 0.0f) for (i = 0; i < n * V; i++) dz[i] *= 1.0f - (z[i] / cap) * (z[i] / cap);
        if (dh) ft__matmul_gw(ctx, n, V, C, dz, W, dh + r0 * C, 1);
        if (dW) ft_gemm(ctx, 1, 0, V, C, n, dz, V, FT__F(h) + r0 * C, C, dW, C, 1);
    }
    ft__arena_rewind(ctx, &mk);
}

/* ---- where, dropout ------------------------------------------------------------------------------------------- */
FT_API ft_tensor *ft_where(ft_ctx *ctx, ft_tensor *cond, ft_tensor *a, ft_tensor *b) {
    ft_tensor *y; ft__node *nd; int64_t i, n;
    FT__IN(cond); FT__IN(a); FT__IN(b);
    FT__F32(ctx, cond, "where"); FT__F32(ctx, a, "where"); FT__F32(ctx, b, "where");
    if (!ft_same_shape(cond, a) || !ft_same_shape(a, b)) return ft__fail(ctx, FT_ERR_SHAPE, "where: cond, a and b must have one shape");
    y = ft__like(ctx, a); FT__IN(y);
    n = ft_numel(a);
    for (i = 0; i < n; i++) FT__F(y)[i] = FT__F(cond)[i] != 0.0f ? FT__F(a)[i] : FT__F(b)[i];
    if ((nd = ft__record(ctx, FT_OP_WHERE, y, a, b, NULL)) != NULL) { nd->in[2] = cond; nd->ver[2] = ft__version(cond); }
    return y;
}
static void ft__where_backward(ft_ctx *ctx, ft__node *nd) {
    ft_tensor *a = nd->in[0], *b = nd->in[1], *c = nd->in[2]; int64_t i, n = ft_numel(a);
    float *dA = ft__wants(a) ? ft__grad(ctx, a) : NULL, *dB = ft__wants(b) ? ft__grad(ctx, b) : NULL;
    for (i = 0; i < n; i++) {
        if (FT__F(c)[i] != 0.0f) { if (dA) dA[i] += nd->out->grad[i]; }
        else if (dB) dB[i] += nd->out->grad[i];
    }
}

FT_API ft_tensor *ft_dropout(ft_ctx *ctx, ft_tensor *x, float p) {
    ft_tensor *y; ft__node *nd; int64_t i, n; float *mask, keep;
    FT__IN(x); FT__F32(ctx, x, "dropout");
    if (!(p >= 0.0f && p < 1.0f)) return ft__fail(ctx, FT_ERR_INVALID, "dropout: p = %g outside [0, 1)", (double)p);
    y = ft__like(ctx, x); FT__IN(y);
    n = ft_numel(x); keep = 1.0f / (1.0f - p);
    mask = FT__CAST(float *, ft__arena_alloc(ctx, (size_t)n * sizeof(float)));
    if (!mask) return ft__fail(ctx, FT_ERR_NOMEM, "dropout: arena out of memory");
    for (i = 0; i < n; i++) {                   /* one RNG draw per element, in order */
        mask[i] = ft_rng_uniform(&ctx->rng) < p ? 0.0f : keep;
        FT__F(y)[i] = FT__F(x)[i] * mask[i];
    }
    if ((nd = ft__record(ctx, FT_OP_DROPOUT, y, x, NULL, NULL)) != NULL) nd->s0 = mask;
    return y;
}
static void ft__dropout_backward(ft_ctx *ctx, ft__node *nd) {
    int64_t i, n = ft_numel(nd->in[0]); float *dx = ft__grad(ctx, nd->in[0]);
    if (dx) for (i = 0; i < n; i++) dx[i] += nd->out->grad[i] * nd->s0[i];
}

/* ---- concat, slice (copies), reshape and row views (shared storage) ------------------------------------------- */
/* view x as (outer, len(axis) * inner) blocks */
static void ft__axis_split(const ft_tensor *x, int axis, int64_t *outer, int64_t *inner) {
    int i;
    *outer = 1; *inner = 1;
    for (i = 0; i < axis; i++) *outer *= x->shape[i];
    for (i = axis + 1; i < x->ndim; i++) *inner *= x->shape[i];
}
FT_API ft_tensor *ft_concat(ft_ctx *ctx, ft_tensor *a, ft_tensor *b, int axis) {
    int64_t shape[FT_MAX_DIMS], outer, inner, na, nb, o; int i; ft_tensor *y; ft__node *nd;
    FT__IN(a); FT__IN(b); FT__F32(ctx, a, "concat"); FT__F32(ctx, b, "concat");
    if (axis < 0) axis += a->ndim;
    if (a->ndim != b->ndim || axis < 0 || axis >= a->ndim) return ft__fail(ctx, FT_ERR_SHAPE, "concat: ranks or axis do not fit");
    for (i = 0; i < a->ndim; i++) {
        if (i != axis && a->shape[i] != b->shape[i]) return ft__fail(ctx, FT_ERR_SHAPE, "concat: dim %d differs", i);
        shape[i] = i == axis ? a->shape[i] + b->shape[i] : a->shape[i];
    }
    y = ft__tensor(ctx, FT_TYPE_F32, a->ndim, shape, NULL); FT__IN(y);
    ft__axis_split(a, axis, &outer, &inner);
    na = a->shape[axis] * inner; nb = b->shape[axis] * inner;
    for (o = 0; o < outer; o++) {
        memcpy(FT__F(y) + o * (na + nb), FT__F(a) + o * na, (size_t)na * sizeof(float));
        memcpy(FT__F(y) + o * (na + nb) + na, FT__F(b) + o * nb, (size_t)nb * sizeof(float));
    }
    if ((nd = ft__record(ctx, FT_OP_CONCAT, y, a, b, NULL)) != NULL) nd->n[0] = axis;
    return y;
}
static void ft__concat_backward(ft_ctx *ctx, ft__node *nd) {
    ft_tensor *a = nd->in[0], *b = nd->in[1]; int axis = (int)nd->n[0]; int64_t outer, inner, na, nb, o;
    float *dA = ft__wants(a) ? ft__grad(ctx, a) : NULL, *dB = ft__wants(b) ? ft__grad(ctx, b) : NULL;
    ft__axis_split(a, axis, &outer, &inner);
    na = a->shape[axis] * inner; nb = b->shape[axis] * inner;
    for (o = 0; o < outer; o++) {
        if (dA) ft__vec_axpy(na, 1.0f, nd->out->grad + o * (na + nb), dA + o * na);
        if (dB) ft__vec_axpy(nb, 1.0f, nd->out->grad + o * (na + nb) + na, dB + o * nb);
    }
}
FT_API ft_tensor *ft_slice(ft_ctx *ctx, ft_tensor *x, int axis, int64_t start, int64_t len) {
    int64_t shape[FT_MAX_DIMS], outer, inner, o; int i; ft_tensor *y; ft__node *nd;
    FT__IN(x); FT__F32(ctx, x, "slice");
    if (axis < 0) axis += x->ndim;
    if (axis < 0 || axis >= x->ndim || start < 0 || len < 1 || start + len > x->shape[axis])
        return ft__fail(ctx, FT_ERR_SHAPE, "slice: [%lld, +%lld) outside axis %d", (long long)start, (long long)len, axis);
    for (i = 0; i < x->ndim; i++) shape[i] = i == axis ? len : x->shape[i];
    y = ft__tensor(ctx, FT_TYPE_F32, x->ndim, shape, NULL); FT__IN(y);
    ft__axis_split(x, axis, &outer, &inner);
    for (o = 0; o < outer; o++)
        memcpy(FT__F(y) + o * len * inner, FT__F(x) + (o * x->shape[axis] + start) * inner, (size_t)(len * inner) * sizeof(float));
    if ((nd = ft__record(ctx, FT_OP_SLICE, y, x, NULL, NULL)) != NULL) { nd->n[0] = axis; nd->n[1] = start; nd->n[2] = len; }
    return y;
}
static void ft__slice_backward(ft_ctx *ctx, ft__node *nd) {
    ft_tensor *x = nd->in[0]; int axis = (int)nd->n[0]; int64_t start = nd->n[1], len = nd->n[2], outer, inner, o;
    float *dX = ft__grad(ctx, x);
    if (!dX) return;
    ft__axis_split(x, axis, &outer, &inner);
    for (o = 0; o < outer; o++)
        ft__vec_axpy(len * inner, 1.0f, nd->out->grad + o * len * inner, dX + (o * x->shape[axis] + start) * inner);
}

static ft_tensor *ft__view(ft_ctx *ctx, ft_tensor *x, int ndim, const int64_t *shape, int64_t offset) {
    ft_tensor *y; ft_tensor *owner = x->view_of ? x->view_of : x;
    size_t esz = ft_type_row_bytes(x->type, 1);
    if (esz == 0) return ft__fail(ctx, FT_ERR_UNSUPPORTED, "view: type %s has no element size", ft_type_name(x->type));
    y = ft__tensor(ctx, x->type, ndim, shape, FT__CAST(unsigned char *, x->data) + (size_t)offset * esz);
    FT__IN(y);
    y->view_of = owner; y->view_offset = (x->view_of ? x->view_offset : 0) + offset;
    if (x->grad) y->grad = x->grad + offset;
    ft__record(ctx, FT_OP_RESHAPE, y, x, NULL, NULL);    /* backward: nothing (shared gradient) */
    return y;
}
FT_API ft_tensor *ft_reshape(ft_ctx *ctx, ft_tensor *x, int ndim, const int64_t *shape) {
    int64_t n = 1; int i;
    FT__IN(x);
    if (ndim < 1 || ndim > FT_MAX_DIMS) return ft__fail(ctx, FT_ERR_SHAPE, "reshape: %d dims", ndim);
    for (i = 0; i < ndim; i++) n *= shape[i];
    if (n != ft_numel(x)) return ft__fail(ctx, FT_ERR_SHAPE, "reshape: %lld elements into %lld", (long long)ft_numel(x), (long long)n);
    return ft__view(ctx, x, ndim, shape, 0);
}
FT_API ft_tensor *ft_view_rows(ft_ctx *ctx, ft_tensor *x, int64_t row0, int64_t nrows) {
    int64_t shape[FT_MAX_DIMS], inner; int i;
    FT__IN(x);
    if (row0 < 0 || nrows < 1 || row0 + nrows > x->shape[0]) return ft__fail(ctx, FT_ERR_SHAPE, "view_rows: [%lld, +%lld) outside %lld rows", (long long)row0, (long long)nrows, (long long)x->shape[0]);
    for (i = 0; i < x->ndim; i++) shape[i] = x->shape[i];
    shape[0] = nrows;
    inner = ft_numel(x) / x->shape[0];
    return ft__view(ctx, x, x->ndim, shape, row0 * inner);
}

FT_API void ft_scale_inplace(ft_tensor *x, float s) {
    FT_ASSERT(x && x->type == FT_TYPE_F32);
    ft__vec_scale(ft_numel(x), FT__F(x), s, FT__F(x));
    ft_tensor_mark_modified(x);
}
FT_API void ft_add_inplace(ft_tensor *x, const ft_tensor *y) {
    FT_ASSERT(x && y && x->type == FT_TYPE_F32 && y->type == FT_TYPE_F32 && ft_numel(x) == ft_numel(y));
    ft__vec_axpy(ft_numel(x), 1.0f, FT__F(y), FT__F(x));
    ft_tensor_mark_modified(x);
}

/* ---- the backward pass ------------------------------------------------------------------------------------------ */
static void ft__checkpoint_backward(ft_ctx *ctx, ft__node *nd);
typedef void (*ft__backward_fn)(ft_ctx *ctx, ft__node *nd);
static ft__backward_fn ft__backward_of(ft_op op) {
    switch (op) {
    case FT_OP_MATMUL: return ft__matmul_backward;
    case FT_OP_ADD: case FT_OP_SUB: case FT_OP_MUL: case FT_OP_MINIMUM: case FT_OP_MAXIMUM: return ft__binary_backward;
    case FT_OP_SCALE: return ft__scale_backward;
    case FT_OP_SUM: case FT_OP_MEAN: return ft__reduce_backward;
    case FT_OP_RMSNORM: case FT_OP_LAYERNORM: return ft__norm_backward;
    case FT_OP_ROPE: return ft__rope_backward;
    case FT_OP_ATTENTION: return ft__attention_backward;
    case FT_OP_SOFTMAX: case FT_OP_LOG_SOFTMAX: return ft__softmax_backward;
    case FT_OP_SILU: case FT_OP_GELU: case FT_OP_TANH: case FT_OP_RELU: case FT_OP_SIGMOID:
    case FT_OP_LOGSIGMOID: case FT_OP_EXP: case FT_OP_LOG: case FT_OP_CLAMP: case FT_OP_LOG1MEXP: case FT_OP_GELU_TANH: return ft__unary_backward;
    case FT_OP_SWIGLU: return ft__swiglu_backward;
    case FT_OP_EMBEDDING: return ft__embedding_backward;
    case FT_OP_CROSS_ENTROPY: case FT_OP_LOGPROB: return ft__xent_backward;
    case FT_OP_WHERE: return ft__where_backward;
    case FT_OP_DROPOUT: return ft__dropout_backward;
    case FT_OP_CONCAT: return ft__concat_backward;
    case FT_OP_SLICE: return ft__slice_backward;
    case FT_OP_CHECKPOINT: return ft__checkpoint_backward;
    case FT_OP_LORA_LINEAR: return ft__lora_linear_backward;
    case FT_OP_MOE_COMBINE: return ft__moe_combine_backward;
    case FT_OP_LINEAR_XENT: return ft__lxent_backward;
    default: return NULL;
    }
}

/* nodes [lo, hi) in reverse. Re-entrant: a node's backward may append nodes past hi and run
   this on them (a checkpoint's recomputation), so a node is found by its index each time. */
static ft_result ft__backward_range(ft_ctx *ctx, int lo, int hi) {
    int i, k;
    for (i = hi - 1; i >= lo && ctx->status == FT_OK; i--) {
        ft__node *nd = &ctx->tape[i];
        if (!nd->out->grad) continue;                           /* not on the loss's path */
        for (k = 0; k < 3; k++)
            if (nd->in[k] && ft__version(nd->in[k]) != nd->ver[k])
                return ft_set_error(FT_ERR_INPLACE, "backward: input %d of %s (%s) was modified in place after it was used",
                                    k, ft_op_name(nd->op), nd->in[k]->name ? nd->in[k]->name : "unnamed");
        if (ft__version(nd->out) != nd->ver[3])
            return ft_set_error(FT_ERR_INPLACE, "backward: the output of %s was modified in place", ft_op_name(nd->op));
        if (ft__backward_of(nd->op)) ft__backward_of(nd->op)(ctx, nd);
    }
    return ctx->status;
}
static ft_result ft__run_backward(ft_ctx *ctx) {
    ft_result r = ft__backward_range(ctx, 0, ctx->n_tape);
    if (r != FT_OK && ctx->status == FT_OK) return r;          /* in place: nothing was run */
    ctx->backward_done = 1;
    return ctx->status;
}

FT_API ft_result ft_backward_from(ft_ctx *ctx, ft_tensor *y, const float *dy) {
    float *g;
    if (ctx->status != FT_OK) return ft_set_error(ctx->status, "backward: the forward failed: %s", ft_last_error());
    if (!y) return ft_set_error(FT_ERR_INVALID, "backward: no tensor");
    if (ctx->backward_done) return ft_set_error(FT_ERR_STATE, "backward: already ran on this tape; call ft_ctx_reset first");
    if (!ft__wants(y)) return ft_set_error(FT_ERR_STATE, "backward: the tensor does not depend on anything that requires a gradient");
    if (!(g = ft__grad(ctx, y))) return ctx->status;
    ft__vec_axpy(ft_numel(y), 1.0f, dy, g);
    return ft__run_backward(ctx);
}
FT_API ft_result ft_backward(ft_ctx *ctx, ft_tensor *loss) {
    float one = 1.0f;
    if (loss && ft_numel(loss) != 1) return ft_set_error(FT_ERR_SHAPE, "backward: the loss must have one element (has %lld)", (long long)ft_numel(loss));
    if (loss && !isfinite(FT__F(loss)[0])) return ft_set_error(FT_ERR_NUMERIC, "backward: the loss is %g", (double)FT__F(loss)[0]);
    return ft_backward_from(ctx, loss, &one);
}
FT_API int ft_tape_length(const ft_ctx *ctx) { return ctx->n_tape; }
FT_API ft_op ft_tape_op(const ft_ctx *ctx, int i) { return i >= 0 && i < ctx->n_tape ? ctx->tape[i].op : FT_OP_NONE; }

/* ---- gradient checkpointing ------------------------------------------------------------------------------------
   y = ft_checkpoint(ctx, fn, user, bytes, x) computes y = fn(ctx, user, x) as ONE tape node. The
   forward runs fn, copies its output (x's shape) into a tensor allocated before fn ran, then drops
   fn's tape nodes and rewinds the arena to where it was: the segment's intermediates are given
   back, only x (made before) and the output stay. Backward runs fn again on the same x with the
   RNG state of the forward (dropout draws the same masks) and its tape on, runs that sub-tape's
   backward from the node's output gradient (gradients land in x and in the parameters as they
   would without checkpointing: the same operations in the same order, so bit for bit the same),
   then drops the recomputation the same way before the walk moves on to the previous node.
   fn may read x, its copy of the `bytes` of user, the RNG and tensors made before the call;
   tensors it reads must not be written in place before backward (their versions are checked as
   the tape checks them). Tensors from outside the segment other than x and parameters that need
   a gradient get it too (at most FT__CKPT_MAX_EXT of them). In no-grad mode the segment just
   gives its intermediates back. */
#define FT__CKPT_MAX_EXT 8
typedef struct ft__ckpt {
    ft_segment_fn fn;
    void      *user;                /* arena copy of the caller's bytes                          */
    ft_rng     rng;                 /* the context's RNG when the forward ran fn                 */
    int        n_nodes;             /* length of fn's sub-tape                                   */
    uint64_t   versions;            /* sum of the versions of the sub-tape's inputs              */
    ft_tensor *ext[FT__CKPT_MAX_EXT]; int n_ext;   /* outside tensors needing a gradient buffer  */
} ft__ckpt;

/* the sub-tape [lo, hi) run on x: the sum of its inputs' versions into ck->versions, and the
   inputs from outside it (not x) that need a gradient and have no buffer yet into ck->ext;
   returns 0 when there are more than FT__CKPT_MAX_EXT of those */
static int ft__segment_scan(ft_ctx *ctx, int lo, int hi, const ft_tensor *x, ft__ckpt *ck) {
    int i, j, k, ok = 1;
    ck->versions = 0; ck->n_ext = 0;
    for (i = lo; i < hi; i++) {
        ft__node *nd = &ctx->tape[i];
        ft_tensor *in[3 + FT__CKPT_MAX_EXT]; int n = 3;
        in[0] = nd->in[0]; in[1] = nd->in[1]; in[2] = nd->in[2];
        if (nd->op == FT_OP_ATTENTION && nd->s0) {              /* prefix keys and values */
            ft_tensor **pre = FT__CAST(ft_tensor **, FT__CAST(void *, nd->s0));
            in[n++] = pre[0]; in[n++] = pre[1];
        } else if (nd->op == FT_OP_LORA_LINEAR) {                /* the weight and the branch's input */
            const ft__lora_lin *k = FT__CAST(const ft__lora_lin *, nd->extra);
            in[n++] = k->W; if (k->xd != nd->in[0]) in[n++] = k->xd;
        } else if (nd->op == FT_OP_CHECKPOINT) {                 /* a nested segment's own */
            const ft__ckpt *inner = FT__CAST(const ft__ckpt *, nd->extra);
            for (k = 0; k < inner->n_ext && n < 3 + FT__CKPT_MAX_EXT; k++) in[n++] = inner->ext[k];
            ck->versions += inner->versions;
        }
        for (k = 0; k < n; k++) {
            ft_tensor *t = in[k]; int seen = 0;
            if (!t) continue;
            ck->versions += ft__version(t);
            if (t == x || !ft__wants(t) || t->grad) continue;
            for (j = lo; j < i && !seen; j++) seen = ctx->tape[j].out == t;       /* made inside */
            for (j = 0; j < ck->n_ext && !seen; j++) seen = ck->ext[j] == t;
            if (seen) continue;
            if (ck->n_ext == FT__CKPT_MAX_EXT) ok = 0;
            else ck->ext[ck->n_ext++] = t;
        }
    }
    return ok;
}

FT_API ft_tensor *ft_checkpoint(ft_ctx *ctx, ft_segment_fn fn, const void *user, size_t bytes, ft_tensor *x) {
    ft__ckpt *ck; ft_tensor *out, *y; ft__arena_mark mk; ft__node *nd; int t0, made = 0, j;
    FT__IN(x); FT__F32(ctx, x, "checkpoint");
    out = ft__like(ctx, x); FT__IN(out);
    ck = FT__CAST(ft__ckpt *, ft__arena_alloc(ctx, sizeof *ck));
    if (!ck || !(ck->user = ft__arena_alloc(ctx, bytes))) return ft__fail(ctx, FT_ERR_NOMEM, "checkpoint: arena out of memory");
    if (bytes) memcpy(ck->user, user, bytes);
    ck->fn = fn; ck->rng = ctx->rng;
    mk = ft__arena_mark_get(ctx); t0 = ctx->n_tape;
    y = fn(ctx, ck->user, x);
    if (y && (y->type != FT_TYPE_F32 || !ft_same_shape(y, x))) y = ft__fail(ctx, FT_ERR_SHAPE, "checkpoint: a segment must give a tensor of its input's shape");
    for (j = t0; y && j < ctx->n_tape && !made; j++) made = ctx->tape[j].out == y;
    if (y && made && ft__wants(y)) {                  /* y depends on the sub-tape: keep one node */
        ck->n_nodes = ctx->n_tape - t0;
        if (!ft__segment_scan(ctx, t0, ctx->n_tape, x, ck)) {
            y = ft__fail(ctx, FT_ERR_UNSUPPORTED, "checkpoint: more than %d tensors from outside a segment need gradients", FT__CKPT_MAX_EXT);
            made = 0;
        }
    } else made = 0;
    if (y && (made || !ft__wants(y))) memcpy(out->data, y->data, (size_t)ft_numel(y) * sizeof(float));
    else out = y;                                     /* NULL, or x / a tensor from before */
    ctx->n_tape = t0;
    ft__arena_rewind(ctx, &mk);
    if (made && (nd = ft__record_x(ctx, FT_OP_CHECKPOINT, out, x, NULL, NULL, 1)) != NULL) nd->extra = ck;
    return out;
}

static void ft__checkpoint_backward(ft_ctx *ctx, ft__node *nd) {
    ft__ckpt *ck = FT__CAST(ft__ckpt *, nd->extra), again;     /* nd moves if the tape grows */
    ft_tensor *x = nd->in[0], *out = nd->out, *y;
    ft_rng rng = ctx->rng; ft__arena_mark mk; int t0 = ctx->n_tape, old, i;
    if (ft__wants(x) && !ft__grad(ctx, x)) return;            /* gradients that outlive it: */
    for (i = 0; i < ck->n_ext; i++) if (!ft__grad(ctx, ck->ext[i])) return;     /* before the mark */
    mk = ft__arena_mark_get(ctx);
    ctx->rng = ck->rng; old = ctx->grad_enabled; ctx->grad_enabled = 1;
    y = ck->fn(ctx, ck->user, x);
    ctx->grad_enabled = old; ctx->rng = rng;
    if (y && ctx->status == FT_OK) {
        memset(&again, 0, sizeof again);
        ft__segment_scan(ctx, t0, ctx->n_tape, x, &again);
        if (again.versions != ck->versions)
            ft__fail(ctx, FT_ERR_INPLACE, "backward: a tensor read by a checkpointed segment was modified in place after the forward");
        else if (ctx->n_tape - t0 != ck->n_nodes || !ft__wants(y) || !ft_same_shape(y, out))
            ft__fail(ctx, FT_ERR_STATE, "backward: the recomputation of a checkpointed segment differs from its forward");
        else {
            ft_result r;
            if (!y->view_of && !y->grad) y->grad = out->grad;  /* seed: the node's output gradient */
            else if (ft__grad(ctx, y)) ft__vec_axpy(ft_numel(y), 1.0f, out->grad, y->grad);
            r = ft__backward_range(ctx, t0, ctx->n_tape);
            if (r != FT_OK && ctx->status == FT_OK) ctx->status = r;
        }
    }
    ctx->n_tape = t0;
    ft__arena_rewind(ctx, &mk);
}


/* ============================================================================================
   [quant] GGML block formats: decode a row to f32 (every format a GGUF model ships in) and
   encode a row (Q8_0, Q4_0, Q4_1: what a merged model is written in). n is a multiple of the
   block: 32 elements (Q4_0 ... Q8_0, IQ4_NL) or a 256-element "K" super-block.
   d, dmin, m are f16. In the 32-element 4-bit formats byte qs[j] holds element j in its low
   nibble and element j + 16 in its high nibble.
   Decoding is bit-exact with the gguf Python package (gguf.quants.dequantize) and ggml's
   dequantize_row_*: the same f32 products, in the same order (d * sc, then * q), then the one
   add or subtract. Every product is EXACT in f32 (an f16 d has 11 significant bits, a scale at
   most 8 and q at most 6: < 2^24), so an FMA (an intrinsic, or the compiler contracting with
   -ffp-contract=fast) gives the same float: only the final add rounds. Signed zeros are the
   one trap: (q - 8) d is -0 for q = 8 and d < 0, and q d - 8 d would be +0, so every version
   here multiplies last where the reference does.
   Encoding is ggml's quantize_row_{q8_0,q4_0,q4_1}_ref (= gguf.quants.quantize), byte for byte.
   Then NF4 (bitsandbytes, not a GGML format): encoder, decoder and the weight-row reader that
   the matmul and the embedding use for every storage type (ft__weight_row).
   ============================================================================================ */
typedef struct { uint16_t d; uint8_t qs[16]; } ft__block_q4_0;                       /*  18 B */
typedef struct { uint16_t d, m; uint8_t qs[16]; } ft__block_q4_1;                    /*  20 B */
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } ft__block_q5_0;        /*  22 B */
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } ft__block_q5_1;     /*  24 B */
typedef struct { uint16_t d; int8_t qs[32]; } ft__block_q8_0;                        /*  34 B */
typedef struct { uint16_t d; uint8_t qs[16]; } ft__block_iq4_nl;                     /*  18 B */
typedef struct { uint8_t scales[16]; uint8_t qs[64]; uint16_t d, dmin; } ft__block_q2_k;             /*  84 B */
typedef struct { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; uint16_t d; } ft__block_q3_k; /* 110 B */
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } ft__block_q4_k;            /* 144 B */
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; } ft__block_q5_k; /* 176 B */
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } ft__block_q6_k;   /* 210 B */
typedef char ft__assert_q4_0[(sizeof(ft__block_q4_0) == 18) ? 1 : -1];
typedef char ft__assert_q4_1[(sizeof(ft__block_q4_1) == 20) ? 1 : -1];
typedef char ft__assert_q5_0[(sizeof(ft__block_q5_0) == 22) ? 1 : -1];
typedef char ft__assert_q5_1[(sizeof(ft__block_q5_1) == 24) ? 1 : -1];
typedef char ft__assert_q8_0[(sizeof(ft__block_q8_0) == 34) ? 1 : -1];
typedef char ft__assert_iq4_nl[(sizeof(ft__block_iq4_nl) == 18) ? 1 : -1];
typedef char ft__assert_q2_k[(sizeof(ft__block_q2_k) == 84) ? 1 : -1];
typedef char ft__assert_q3_k[(sizeof(ft__block_q3_k) == 110) ? 1 : -1];
typedef char ft__assert_q4_k[(sizeof(ft__block_q4_k) == 144) ? 1 : -1];
typedef char ft__assert_q5_k[(sizeof(ft__block_q5_k) == 176) ? 1 : -1];
typedef char ft__assert_q6_k[(sizeof(ft__block_q6_k) == 210) ? 1 : -1];

static const int8_t ft__iq4_nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

/* ---- scalar references (always compiled: the tests hold the SIMD versions to them) ---------- */
FT__MAYBE_UNUSED static void ft__dequant_q4_0_ref(const void *src, float *y, int64_t n) {     /* (q - 8) d */
    const ft__block_q4_0 *b = FT__CAST(const ft__block_q4_0 *, src); int64_t i; int j;
    for (i = 0; i < n / 32; i++, b++, y += 32) {
        float d = ft_fp16_to_fp32(b->d);
        for (j = 0; j < 16; j++) {
            y[j]      = (float)((b->qs[j] & 15) - 8) * d;
            y[j + 16] = (float)((b->qs[j] >> 4) - 8) * d;
        }
    }
}
FT__MAYBE_UNUSED static void ft__dequant_q4_1_ref(const void *src, float *y, int64_t n) {     /* q d + m */
    const ft__block_q4_1 *b = FT__CAST(const ft__block_q4_1 *, src); int64_t i; int j;
    for (i = 0; i < n / 32; i++, b++, y += 32) {
        float d = ft_fp16_to_fp32(b->d), m = ft_fp16_to_fp32(b->m);
        for (j = 0; j < 16; j++) {
            y[j]      = (float)(b->qs[j] & 15) * d + m;
            y[j + 16] = (float)(b->qs[j] >> 4) * d + m;
        }
    }
}
/* 5-bit formats: the fifth bit of element j is bit j of qh read as a little-endian u32 */
static uint32_t ft__le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
FT__MAYBE_UNUSED static void ft__dequant_q5_0_ref(const void *src, float *y, int64_t n) {     /* (q - 16) d */
    const ft__block_q5_0 *b = FT__CAST(const ft__block_q5_0 *, src); int64_t i; int j;
    for (i = 0; i < n / 32; i++, b++, y += 32) {
        float d = ft_fp16_to_fp32(b->d); uint32_t qh = ft__le32(b->qh);
        for (j = 0; j < 16; j++) {
            y[j]      = (float)((int)((b->qs[j] & 15) | ((qh >> j) & 1) << 4) - 16) * d;
            y[j + 16] = (float)((int)((b->qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4) - 16) * d;
        }
    }
}
FT__MAYBE_UNUSED static void ft__dequant_q5_1_ref(const void *src, float *y, int64_t n) {     /* q d + m */
    const ft__block_q5_1 *b = FT__CAST(const ft__block_q5_1 *, src); int64_t i; int j;
    for (i = 0; i < n / 32; i++, b++, y += 32) {
        float d = ft_fp16_to_fp32(b->d), m = ft_fp16_to_fp32(b->m); uint32_t qh = ft__le32(b->qh);
        for (j = 0; j < 16; j++) {
            y[j]      = (float)((b->qs[j] & 15) | ((qh >> j) & 1) << 4) * d + m;
            y[j + 16] = (float)((b->qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4) * d + m;
        }
    }
}
FT__MAYBE_UNUSED static void ft__dequant_q8_0_ref(const void *src, float *y, int64_t n) {     /* q d */
    const ft__block_q8_0 *b = FT__CAST(const ft__block_q8_0 *, src); int64_t i; int j;
    for (i = 0; i < n / 32; i++, b++, y += 32) {
        float d = ft_fp16_to_fp32(b->d);
        for (j = 0; j < 32; j++) y[j] = (float)b->qs[j] * d;
    }
}
FT__MAYBE_UNUSED static void ft__dequant_iq4_nl_ref(const void *src, float *y, int64_t n) {   /* d table[q] */
    const ft__block_iq4_nl *b = FT__CAST(const ft__block_iq4_nl *, src); int64_t i; int j;
    for (i = 0; i < n / 32; i++, b++, y += 32) {
        float d = ft_fp16_to_fp32(b->d);
        for (j = 0; j < 16; j++) {
            y[j]      = d * (float)ft__iq4_nl_values[b->qs[j] & 15];
            y[j + 16] = d * (float)ft__iq4_nl_values[b->qs[j] >> 4];
        }
    }
}
/* Q2_K: 16 sub-blocks of 16; byte scales[k] = min << 4 | scale; y = (d sc) q - (dmin min).
   Two halves of 128 elements, each 32 bytes of qs read four times (shift 0, 2, 4, 6); each
   read gives two sub-blocks (bytes 0-15, 16-31). */
FT__MAYBE_UNUSED static void ft__dequant_q2_k_ref(const void *src, float *y, int64_t n) {
    const ft__block_q2_k *b = FT__CAST(const ft__block_q2_k *, src); int64_t i; int h, s, l, k;
    for (i = 0; i < n / 256; i++, b++)
        for (h = 0; h < 2; h++)
            for (s = 0; s < 8; s++) {                       /* sub-block k = 8 h + s: shift 2 (s / 2) */
                const uint8_t *q = b->qs + 32 * h + 16 * (s & 1);
                float dl, ml;
                k = 8 * h + s;
                dl = ft_fp16_to_fp32(b->d) * (float)(b->scales[k] & 15);
                ml = ft_fp16_to_fp32(b->dmin) * (float)(b->scales[k] >> 4);
                for (l = 0; l < 16; l++) *y++ = dl * (float)((q[l] >> (2 * (s >> 1))) & 3) - ml;
            }
}
/* Q3_K: 16 sub-blocks of 16; 2 low bits in qs (as Q2_K), the third in hmask (bit b of byte l
   for element 32 b + l; clear means -4); 16 6-bit scales biased by 32: low 4 bits in bytes
   0-7 (low nibbles, then high nibbles), high 2 bits in bytes 8-11. y = (d sc) q. */
FT__MAYBE_UNUSED static void ft__dequant_q3_k_ref(const void *src, float *y, int64_t n) {
    const ft__block_q3_k *b = FT__CAST(const ft__block_q3_k *, src); int64_t i; int h, s, l, k;
    for (i = 0; i < n / 256; i++, b++) {
        float d = ft_fp16_to_fp32(b->d);
        for (h = 0; h < 2; h++)
            for (s = 0; s < 8; s++) {
                const uint8_t *q = b->qs + 32 * h + 16 * (s & 1), *hm = b->hmask + 16 * (s & 1);
                int bit = 4 * h + (s >> 1), lo, hi; float dl;
                k = 8 * h + s;
                lo = k < 8 ? b->scales[k] & 15 : b->scales[k - 8] >> 4;
                hi = (b->scales[8 + (k & 3)] >> (2 * (k >> 2))) & 3;
                dl = d * (float)((lo | hi << 4) - 32);
                for (l = 0; l < 16; l++)
                    *y++ = dl * (float)((int)((q[l] >> (2 * (s >> 1))) & 3) - (((hm[l] >> bit) & 1) ? 0 : 4));
            }
    }
}
/* the 6-bit scale and min of sub-block j (of 8) in the 12 scale bytes of Q4_K / Q5_K:
   j < 4: low 6 bits of bytes j, j + 4; j >= 4: nibbles of byte j + 4, high 2 bits from j - 4, j */
static void ft__scale_min_k4(int j, const uint8_t *s, int *sc, int *mn) {
    if (j < 4) { *sc = s[j] & 63; *mn = s[j + 4] & 63; }
    else { *sc = (s[j + 4] & 15) | (s[j - 4] >> 6) << 4; *mn = (s[j + 4] >> 4) | (s[j] >> 6) << 4; }
}
/* Q4_K / Q5_K: 8 sub-blocks of 32, y = (d sc) q - (dmin min). 32 bytes of qs give two
   sub-blocks (low nibbles, then high); Q5_K's fifth bit of sub-block j is bit j of qh[l]. */
static void ft__dequant_k45(const uint8_t *scales, const uint8_t *qs, const uint8_t *qh, float d, float dmin, float *y) {
    int j, l, sc, mn;
    for (j = 0; j < 8; j++, y += 32) {
        const uint8_t *q = qs + 32 * (j >> 1); int sh = 4 * (j & 1); float dl, ml;
        ft__scale_min_k4(j, scales, &sc, &mn);
        dl = d * (float)sc; ml = dmin * (float)mn;
        if (qh) for (l = 0; l < 32; l++) y[l] = dl * (float)(((q[l] >> sh) & 15) | ((qh[l] >> j) & 1) << 4) - ml;
        else    for (l = 0; l < 32; l++) y[l] = dl * (float)((q[l] >> sh) & 15) - ml;
    }
}
FT__MAYBE_UNUSED static void ft__dequant_q4_k_ref(const void *src, float *y, int64_t n) {
    const ft__block_q4_k *b = FT__CAST(const ft__block_q4_k *, src); int64_t i;
    for (i = 0; i < n / 256; i++, b++, y += 256)
        ft__dequant_k45(b->scales, b->qs, NULL, ft_fp16_to_fp32(b->d), ft_fp16_to_fp32(b->dmin), y);
}
FT__MAYBE_UNUSED static void ft__dequant_q5_k_ref(const void *src, float *y, int64_t n) {
    const ft__block_q5_k *b = FT__CAST(const ft__block_q5_k *, src); int64_t i;
    for (i = 0; i < n / 256; i++, b++, y += 256)
        ft__dequant_k45(b->scales, b->qs, b->qh, ft_fp16_to_fp32(b->d), ft_fp16_to_fp32(b->dmin), y);
}
/* Q6_K: 16 sub-blocks of 16 with int8 scales; q = 4 low bits | 2 high bits << 4, minus 32;
   y = (d sc) q. Each half of 128 elements: ql[64], qh[32], scales[8]; for l < 32 element l
   is ql[l] low | qh[l] bits 0-1, l + 32: ql[l + 32] low | bits 2-3, l + 64: ql[l] high |
   bits 4-5, l + 96: ql[l + 32] high | bits 6-7. */
FT__MAYBE_UNUSED static void ft__dequant_q6_k_ref(const void *src, float *y, int64_t n) {
    const ft__block_q6_k *b = FT__CAST(const ft__block_q6_k *, src); int64_t i; int h, g, l;
    for (i = 0; i < n / 256; i++, b++) {
        float d = ft_fp16_to_fp32(b->d);
        for (h = 0; h < 2; h++, y += 128)
            for (g = 0; g < 4; g++) {                       /* 32 outputs 32 g .. 32 g + 31 */
                const uint8_t *ql = b->ql + 64 * h + 32 * (g & 1), *qh = b->qh + 32 * h;
                int shl = 4 * (g >> 1);
                for (l = 0; l < 32; l++) {
                    int q = (((ql[l] >> shl) & 15) | ((qh[l] >> (2 * g)) & 3) << 4) - 32;
                    y[32 * g + l] = d * (float)b->scales[8 * h + 2 * g + (l >> 4)] * (float)q;
                }
            }
    }
}

/* ---- SIMD decoders of the hot formats (Q4_0, Q4_1, Q8_0, Q6_K, Q4_K, Q5_K) ----------------
   Bytes / nibbles become int8 lanes (already minus the offset), are widened to int32, converted
   and multiplied by the broadcast scale: the reference's operations exactly. Q4_1's q d + m is
   one FMA (the product is exact). The K formats work on 16 bytes
   at a time: part of one sub-block, one scale. */
#if !defined(FT_NO_SIMD) && defined(__AVX512F__)
#include <immintrin.h>
#define ft__q_load16(p) _mm_loadu_si128(FT__CAST(const __m128i *, FT__CAST(const void *, p)))
/* y[0..15] = q[0..15] * d, q int8 */
static inline void ft__q_store16(float *y, __m128i q, __m512 d) {
    _mm512_storeu_ps(y, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), d));
}
static void ft__dequant_q4_0(const void *src, float *y, int64_t n) {
    const ft__block_q4_0 *b = FT__CAST(const ft__block_q4_0 *, src); int64_t i;
    const __m128i m4 = _mm_set1_epi8(15), e8 = _mm_set1_epi8(8);
    for (i = 0; i < n / 32; i++, b++, y += 32) {
        __m512 d = _mm512_set1_ps(ft_fp16_to_fp32(b->d));
        __m128i q = ft__q_load16(b->qs);
        ft__q_store16(y, _mm_sub_epi8(_mm_and_si128(q, m4), e8), d);
        ft__q_store16(y + 16, _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), m4), e8), d);
    }
}
static void ft__dequant_q4_1(const void *src, float *y, int64_t n) {
    const ft__block_q4_1 *b = FT__CAST(const ft__block_q4_1 *, src); int64_t i;
    const __m128i m4 = _mm_set1_epi8(15);
    for (i = 0; i < n / 32; i++, b++, y += 32) {
        __m512 d = _mm512_set1_ps(ft_fp16_to_fp32(b->d)), m = _mm512_set1_ps(ft_fp16_to_fp32(b->m));
        __m128i q = ft__q_load16(b->qs);
        __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(q, m4)));
        __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(q, 4), m4)));
        _mm512_storeu_ps(y, _mm512_fmadd_ps(lo, d, m));
        _mm512_storeu_ps(y + 16, _mm512_fmadd_ps(hi, d, m));
    }
}
static void ft__dequant_q8_0(const void *src, float *y, int64_t n) {
    const ft__block_q8_0 *b = FT__CAST(const ft__block_q8_0 *, src); int64_t i;
    for (i = 0; i < n / 32; i++, b++, y += 32) {
        __m512 d = _mm512_set1_ps(ft_fp16_to_fp32(b->d));
        ft__q_store16(y, ft__q_load16(b->qs), d);
        ft__q_store16(y + 16, ft__q_load16(b->qs + 16), d);
    }
}
/* y[0..15] = q[0..15] * dl - ml, q int8. A multiply, then a subtract: an FMS would give the same
   numbers, but where ml is a NaN (an inf dmin times 0) compilers flip its sign to use an FMA */
static inline void ft__q_store16_mulsub(float *y, __m128i q, __m512 dl, __m512 ml) {
    _mm512_storeu_ps(y, _mm512_sub_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), dl), ml));
}
typedef __m512 ft__q_vf;
#define FT__Q_SIMD "avx512"
#define ft__q_set1(x) _mm512_set1_ps(x)
#elif !defined(FT_NO_SIMD) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define ft__q_load16(p) _mm_loadu_si128(FT__CAST(const __m128i *, FT__CAST(const void *, p)))
static inline void ft__q_store16(float *y, __m128i q, __m256 d) {
    _mm256_storeu_ps(y, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d));
    _mm256_storeu_ps(y + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8))), d));
}
static void ft__dequant_q4_0(const void *src, float *y, int64_t n) {
    const ft__block_q4_0 *b = FT__CAST(const ft__block_q4_0 *, src); int64_t i;
    const __m128i m4 = _mm_set1_epi8(15), e8 = _mm_set1_epi8(8);
    for (i = 0; i < n / 32; i++, b++, y += 32) {
        __m256 d = _mm256_set1_ps(ft_fp16_to_fp32(b->d));
        __m128i q = ft__q_load16(b->qs);
        ft__q_store16(y, _mm_sub_epi8(_mm_and_si128(q, m4), e8), d);
        ft__q_store16(y + 16, _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), m4), e8), d);
    }
}
static void ft__dequant_q4_1(const void *src, float *y, int64_t n) {
    const ft__block_q4_1 *b = FT__CAST(const ft__block_q4_1 *, src); int64_t i; int k;
    const __m128i m4 = _mm_set1_epi8(15);
    for (i = 0; i < n / 32; i++, b++, y += 32) {
        __m256 d = _mm256_set1_ps(ft_fp16_to_fp32(b->d)), m = _mm256_set1_ps(ft_fp16_to_fp32(b->m));
        __m128i q = ft__q_load16(b->qs), h[2];
        h[0] = _mm_and_si128(q, m4); h[1] = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
        for (k = 0; k < 2; k++) {
            __m256 a = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(h[k]));
            __m256 c = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(h[k], 8)));
            _mm256_storeu_ps(y + 16 * k, _mm256_fmadd_ps(a, d, m));
            _mm256_storeu_ps(y + 16 * k + 8, _mm256_fmadd_ps(c, d, m));
        }
    }
}
static void ft__dequant_q8_0(const void *src, float *y, int64_t n) {
    const ft__block_q8_0 *b = FT__CAST(const ft__block_q8_0 *, src); int64_t i;
    for (i = 0; i < n / 32; i++, b++, y += 32) {
        __m256 d = _mm256_set1_ps(ft_fp16_to_fp32(b->d));
        ft__q_store16(y, ft__q_load16(b->qs), d);
        ft__q_store16(y + 16, ft__q_load16(b->qs + 16), d);
    }
}
static inline void ft__q_store16_mulsub(float *y, __m128i q, __m256 dl, __m256 ml) {
    _mm256_storeu_ps(y, _mm256_sub_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), dl), ml));
    _mm256_storeu_ps(y + 8, _mm256_sub_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8))), dl), ml));
}
typedef __m256 ft__q_vf;
#define FT__Q_SIMD "avx2"
#define ft__q_set1(x) _mm256_set1_ps(x)
#elif !defined(FT_NO_SIMD) && defined(__ARM_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#define ft__q_load16(p) vld1q_u8(p)
static inline void ft__q_store16(float *y, int8x16_t q, float32x4_t d) {
    int16x8_t a = vmovl_s8(vget_low_s8(q)), b = vmovl_high_s8(q);
    vst1q_f32(y,      vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(a))), d));
    vst1q_f32(y + 4,  vmulq_f32(vcvtq_f32_s32(vmovl_high_s16(a)), d));
    vst1q_f32(y + 8,  vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(b))), d));
    vst1q_f32(y + 12, vmulq_f32(vcvtq_f32_s32(vmovl_high_s16(b)), d));
}
static void ft__dequant_q4_0(const void *src, float *y, int64_t n) {
    const ft__block_q4_0 *b = FT__CAST(const ft__block_q4_0 *, src); int64_t i;
    const uint8x16_t m4 = vdupq_n_u8(15); const int8x16_t e8 = vdupq_n_s8(8);
    for (i = 0; i < n / 32; i++, b++, y += 32) {
        float32x4_t d = vdupq_n_f32(ft_fp16_to_fp32(b->d));
        uint8x16_t q = vld1q_u8(b->qs);
        ft__q_store16(y, vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, m4)), e8), d);
        ft__q_store16(y + 16, vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(q, 4)), e8), d);
    }
}
static void ft__dequant_q4_1(const void *src, float *y, int64_t n) {
    const ft__block_q4_1 *b = FT__CAST(const ft__block_q4_1 *, src); int64_t i; int k;
    const uint8x16_t m4 = vdupq_n_u8(15);
    for (i = 0; i < n / 32; i++, b++, y += 32) {
        float32x4_t d = vdupq_n_f32(ft_fp16_to_fp32(b->d)), m = vdupq_n_f32(ft_fp16_to_fp32(b->m));
        uint8x16_t q = vld1q_u8(b->qs), h[2];
        h[0] = vandq_u8(q, m4); h[1] = vshrq_n_u8(q, 4);
        for (k = 0; k < 2; k++) {
            uint16x8_t a = vmovl_u8(vget_low_u8(h[k])), c = vmovl_high_u8(h[k]);
            float *o = y + 16 * k;
            vst1q_f32(o,      vfmaq_f32(m, vcvtq_f32_u32(vmovl_u16(vget_low_u16(a))), d));
            vst1q_f32(o + 4,  vfmaq_f32(m, vcvtq_f32_u32(vmovl_high_u16(a)), d));
            vst1q_f32(o + 8,  vfmaq_f32(m, vcvtq_f32_u32(vmovl_u16(vget_low_u16(c))), d));
            vst1q_f32(o + 12, vfmaq_f32(m, vcvtq_f32_u32(vmovl_high_u16(c)), d));
        }
    }
}
static void ft__dequant_q8_0(const void *src, float *y, int64_t n) {
    const ft__block_q8_0 *b = FT__CAST(const ft__block_q8_0 *, src); int64_t i;
    for (i = 0; i < n / 32; i++, b++, y += 32) {
        float32x4_t d = vdupq_n_f32(ft_fp16_to_fp32(b->d));
        ft__q_store16(y, vld1q_s8(b->qs), d);
        ft__q_store16(y + 16, vld1q_s8(b->qs + 16), d);
    }
}
static inline void ft__q_store16_mulsub(float *y, int8x16_t q, float32x4_t dl, float32x4_t ml) {
    int16x8_t a = vmovl_s8(vget_low_s8(q)), b = vmovl_high_s8(q);
    vst1q_f32(y,      vsubq_f32(vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(a))), dl), ml));
    vst1q_f32(y + 4,  vsubq_f32(vmulq_f32(vcvtq_f32_s32(vmovl_high_s16(a)), dl), ml));
    vst1q_f32(y + 8,  vsubq_f32(vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(b))), dl), ml));
    vst1q_f32(y + 12, vsubq_f32(vmulq_f32(vcvtq_f32_s32(vmovl_high_s16(b)), dl), ml));
}
typedef float32x4_t ft__q_vf;
#define FT__Q_SIMD "neon"
#define ft__q_set1(x) vdupq_n_f32(x)
#else
#define FT__Q_SIMD "scalar"
static void ft__dequant_q4_0(const void *src, float *y, int64_t n) { ft__dequant_q4_0_ref(src, y, n); }
static void ft__dequant_q4_1(const void *src, float *y, int64_t n) { ft__dequant_q4_1_ref(src, y, n); }
static void ft__dequant_q8_0(const void *src, float *y, int64_t n) { ft__dequant_q8_0_ref(src, y, n); }
static void ft__dequant_q6_k(const void *src, float *y, int64_t n) { ft__dequant_q6_k_ref(src, y, n); }
static void ft__dequant_q4_k(const void *src, float *y, int64_t n) { ft__dequant_q4_k_ref(src, y, n); }
static void ft__dequant_q5_k(const void *src, float *y, int64_t n) { ft__dequant_q5_k_ref(src, y, n); }
#endif

#if defined(ft__q_set1)
/* Q6_K, 16 bytes at a time: chunk c (0, 1) of a half gives sub-blocks c, 2 + c, 4 + c, 6 + c */
#if defined(__aarch64__)
#define ft__q6_and(a, b)  vandq_u8(a, b)
#define ft__q6_or(a, b)   vorrq_u8(a, b)
#define ft__q6_shl4(a)    vshlq_n_u8(a, 4)
#define ft__q6_shl2(a)    vshlq_n_u8(a, 2)
#define ft__q6_shr2(a)    vshrq_n_u8(a, 2)
#define ft__q6_shr4(a)    vshrq_n_u8(a, 4)
#define ft__q6_splat(x)   vdupq_n_u8(x)
#define ft__q6_m32(a)     vsubq_s8(vreinterpretq_s8_u8(a), vdupq_n_s8(32))
#define ft__q6_s8(a)      vreinterpretq_s8_u8(a)
#define ft__q6_bit4(a, j) vshlq_n_u8(vandq_u8(vshlq_u8(a, vdupq_n_s8((int8_t)-(j))), vdupq_n_u8(1)), 4)  /* bit j -> 16 */
typedef uint8x16_t ft__q6_vb;
#else                       /* x86: 16-bit shifts, the bits that cross a byte masked off after */
#define ft__q6_and(a, b)  _mm_and_si128(a, b)
#define ft__q6_or(a, b)   _mm_or_si128(a, b)
#define ft__q6_shl4(a)    _mm_slli_epi16(a, 4)
#define ft__q6_shl2(a)    _mm_slli_epi16(a, 2)
#define ft__q6_shr2(a)    _mm_srli_epi16(a, 2)
#define ft__q6_shr4(a)    _mm_and_si128(_mm_srli_epi16(a, 4), _mm_set1_epi8(15))
#define ft__q6_splat(x)   _mm_set1_epi8(x)
#define ft__q6_m32(a)     _mm_sub_epi8(a, _mm_set1_epi8(32))
#define ft__q6_s8(a)      (a)
#define ft__q6_bit4(a, j) _mm_slli_epi16(_mm_and_si128(_mm_srl_epi16(a, _mm_cvtsi32_si128(j)), _mm_set1_epi8(1)), 4)
typedef __m128i ft__q6_vb;
#endif
static void ft__dequant_q6_k(const void *src, float *y, int64_t n) {
    const ft__block_q6_k *b = FT__CAST(const ft__block_q6_k *, src); int64_t i; int h, c;
    const ft__q6_vb m4 = ft__q6_splat(15), m30 = ft__q6_splat(0x30);
    for (i = 0; i < n / 256; i++, b++) {
        float d = ft_fp16_to_fp32(b->d);
        for (h = 0; h < 2; h++, y += 128)
            for (c = 0; c < 2; c++) {
                const int8_t *sc = b->scales + 8 * h + c;
                ft__q6_vb a = ft__q_load16(b->ql + 64 * h + 16 * c);         /* elements l, l + 64 */
                ft__q6_vb e = ft__q_load16(b->ql + 64 * h + 32 + 16 * c);    /* l + 32, l + 96     */
                ft__q6_vb qh = ft__q_load16(b->qh + 32 * h + 16 * c);
                float *o = y + 16 * c;
                ft__q_store16(o,      ft__q6_m32(ft__q6_or(ft__q6_and(a, m4), ft__q6_and(ft__q6_shl4(qh), m30))), ft__q_set1(d * (float)sc[0]));
                ft__q_store16(o + 32, ft__q6_m32(ft__q6_or(ft__q6_and(e, m4), ft__q6_and(ft__q6_shl2(qh), m30))), ft__q_set1(d * (float)sc[2]));
                ft__q_store16(o + 64, ft__q6_m32(ft__q6_or(ft__q6_shr4(a), ft__q6_and(qh, m30))), ft__q_set1(d * (float)sc[4]));
                ft__q_store16(o + 96, ft__q6_m32(ft__q6_or(ft__q6_shr4(e), ft__q6_and(ft__q6_shr2(qh), m30))), ft__q_set1(d * (float)sc[6]));
            }
    }
}
/* Q4_K / Q5_K: sub-block j = 32 nibbles (+ bit j of qh), 16 at a time, y = q dl - ml */
static void ft__dequant_k45_simd(const uint8_t *scales, const uint8_t *qs, const uint8_t *qh, float d, float dmin, float *y) {
    const ft__q6_vb m4 = ft__q6_splat(15); int j, c, sc, mn;
    for (j = 0; j < 8; j++, y += 32) {
        ft__q_vf dl, ml;
        ft__scale_min_k4(j, scales, &sc, &mn);
        dl = ft__q_set1(d * (float)sc); ml = ft__q_set1(dmin * (float)mn);
        for (c = 0; c < 2; c++) {
            ft__q6_vb q = ft__q_load16(qs + 32 * (j >> 1) + 16 * c);
            q = (j & 1) ? ft__q6_shr4(q) : ft__q6_and(q, m4);
            if (qh) q = ft__q6_or(q, ft__q6_bit4(ft__q_load16(qh + 16 * c), j));
            ft__q_store16_mulsub(y + 16 * c, ft__q6_s8(q), dl, ml);
        }
    }
}
static void ft__dequant_q4_k(const void *src, float *y, int64_t n) {
    const ft__block_q4_k *b = FT__CAST(const ft__block_q4_k *, src); int64_t i;
    for (i = 0; i < n / 256; i++, b++, y += 256)
        ft__dequant_k45_simd(b->scales, b->qs, NULL, ft_fp16_to_fp32(b->d), ft_fp16_to_fp32(b->dmin), y);
}
static void ft__dequant_q5_k(const void *src, float *y, int64_t n) {
    const ft__block_q5_k *b = FT__CAST(const ft__block_q5_k *, src); int64_t i;
    for (i = 0; i < n / 256; i++, b++, y += 256)
        ft__dequant_k45_simd(b->scales, b->qs, b->qh, ft_fp16_to_fp32(b->d), ft_fp16_to_fp32(b->dmin), y);
}
#endif

/* the cold formats: the references are the decoders */
static void ft__dequant_q5_0(const void *src, float *y, int64_t n) { ft__dequant_q5_0_ref(src, y, n); }
static void ft__dequant_q5_1(const void *src, float *y, int64_t n) { ft__dequant_q5_1_ref(src, y, n); }
static void ft__dequant_iq4_nl(const void *src, float *y, int64_t n) { ft__dequant_iq4_nl_ref(src, y, n); }
static void ft__dequant_q2_k(const void *src, float *y, int64_t n) { ft__dequant_q2_k_ref(src, y, n); }
static void ft__dequant_q3_k(const void *src, float *y, int64_t n) { ft__dequant_q3_k_ref(src, y, n); }

/* ---- encoders: ggml's quantize_row_*_ref, byte for byte ---------------------------------------
   ggml and gguf round the product x * id to f32 and then add the 0.5 / 8.5: GCC in its GNU
   modes (and any compiler given -ffp-contract=fast) would fuse the two into an FMA, which
   changes a code now and then. FT__ROUNDED(p) hides p from that: an empty asm that "changes" it. */
#if defined(__GNUC__) && (defined(__x86_64__) || (defined(__i386__) && defined(__SSE2_MATH__)))
#define FT__ROUNDED(p) __asm__("" : "+x"(p))
#elif defined(__GNUC__) && defined(__aarch64__)
#define FT__ROUNDED(p) __asm__("" : "+w"(p))
#elif defined(__GNUC__)
#define FT__ROUNDED(p) __asm__("" : "+m"(p))
#else
#define FT__ROUNDED(p) ((void)0)          /* MSVC does not contract across statements */
#endif
/* a 4-bit code: trunc(p + bias) clamped to 0..15, as (uint8_t)MIN(15, (int8_t)(p + bias)) */
static int ft__quant_nibble(float p, float bias) {
    float v;
    FT__ROUNDED(p);
    v = p + bias;
    return v >= 15.0f ? 15 : v >= 1.0f ? (int)v : 0;      /* (also no UB for inf / nan) */
}
/* Q8_0: d = max|x| / 127, q = round(x / d) half away from zero */
FT__MAYBE_UNUSED static void ft__quant_q8_0(const float *x, void *dst, int64_t n) {
    ft__block_q8_0 *b = FT__CAST(ft__block_q8_0 *, dst); int64_t i; int j;
    for (i = 0; i < n / 32; i++, b++, x += 32) {
        float amax = 0.0f, d, id;
        for (j = 0; j < 32; j++) amax = FT__MAX(amax, fabsf(x[j]));
        d = amax / 127.0f;
        id = d != 0.0f ? 1.0f / d : 0.0f;
        b->d = ft_fp32_to_fp16(d);
        for (j = 0; j < 32; j++) {
            float v = roundf(x[j] * id);
            b->qs[j] = (int8_t)(v >= 127.0f ? 127 : v <= -127.0f ? -127 : v == v ? (int)v : 0);
        }
    }
}
/* Q4_0: d = -(the signed x of largest |x|, first if tied) / 8, so that x = max codes as 0;
   q = trunc(x / d + 8.5) clamped to 15 */
FT__MAYBE_UNUSED static void ft__quant_q4_0(const float *x, void *dst, int64_t n) {
    ft__block_q4_0 *b = FT__CAST(ft__block_q4_0 *, dst); int64_t i; int j;
    for (i = 0; i < n / 32; i++, b++, x += 32) {
        float amax = 0.0f, max = 0.0f, d, id;
        for (j = 0; j < 32; j++) if (amax < fabsf(x[j])) { amax = fabsf(x[j]); max = x[j]; }
        d = max / -8.0f;
        id = d != 0.0f ? 1.0f / d : 0.0f;
        b->d = ft_fp32_to_fp16(d);
        for (j = 0; j < 16; j++)
            b->qs[j] = (uint8_t)(ft__quant_nibble(x[j] * id, 8.5f) | ft__quant_nibble(x[j + 16] * id, 8.5f) << 4);
    }
}
/* Q4_1: m = min x, d = (max x - min x) / 15, q = trunc((x - m) / d + 0.5) clamped to 15 */
FT__MAYBE_UNUSED static void ft__quant_q4_1(const float *x, void *dst, int64_t n) {
    ft__block_q4_1 *b = FT__CAST(ft__block_q4_1 *, dst); int64_t i; int j;
    for (i = 0; i < n / 32; i++, b++, x += 32) {
        float min = FLT_MAX, max = -FLT_MAX, d, id;
        for (j = 0; j < 32; j++) { if (x[j] < min) min = x[j]; if (x[j] > max) max = x[j]; }
        d = (max - min) / 15.0f;
        id = d != 0.0f ? 1.0f / d : 0.0f;
        b->d = ft_fp32_to_fp16(d);
        b->m = ft_fp32_to_fp16(min);
        for (j = 0; j < 16; j++)
            b->qs[j] = (uint8_t)(ft__quant_nibble((x[j] - min) * id, 0.5f) | ft__quant_nibble((x[j + 16] - min) * id, 0.5f) << 4);
    }
}

/* ---- NF4 with double quantization: bitsandbytes 0.50's CPU path, bit for bit ------------------
   Quantize (bitsandbytes/backends/default/ops.py quantize_4bit, then functional.py's
   compress_statistics and the C kernel csrc/cpu_ops.cpp quantize_cpu_impl):
     absmax_b = max |x| over block b of 64 (a short last block has its own);
     full blocks: s = x * (1 / max(absmax, 1e-38)), the short one: s = x / max(absmax, 1e-38)
       (and it stores the clamped absmax); q = the number of midpoints of the 16 values < s
       (torch.bucketize: an exact midpoint goes to the LOWER index); an odd count is padded
       with s = 0 (q = 7); byte = q[2i] << 4 | q[2i+1].
     offset = torch's mean of the absmax (ft__torch_mean);
     v = absmax - offset in blocks of 256: absmax2 = max |v|, t = v * (1 / absmax2), and the code
       is NOT the nearest one: t is rounded to a 65536-point grid, (uint16)fma((t+1)/2, 65535,
       0.5), and the grid point g = -1 + 2i/65535 gets the number of the map's midpoints < g
       (a block of zeros gets code 0).
   Dequantize (dequantize_blockwise + offset, then dequantize_4bit): absmax = code[qa] * absmax2
   rounded, + offset rounded (never fused); w = nf4[q] * absmax.
   Where bitsandbytes' own CPU kernels disagree (its AVX-512 dequantize_4bit indexes absmax per
   row when a row is a multiple of 16 but not of 64), this follows the flat 64-blocks that its
   quantizer, its generic path and CUDA use. */
static const float ft__nf4_values[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

FT_API int64_t ft_nf4_blocks(int64_t n) { return (n + FT_NF4_BLOCK - 1) / FT_NF4_BLOCK; }
FT_API int64_t ft_nf4_blocks2(int64_t n) { return (ft_nf4_blocks(n) + FT_NF4_BLOCK2 - 1) / FT_NF4_BLOCK2; }

/* torch's row_sum (aten/src/ATen/native/cpu/SumKernel.cpp) over `size` items of w lanes (item i
   is x[w i .. w i + w)): four interleaved accumulators, each a cascade of 4 levels that carry
   every 16 items; then the leftover items into the first, and the four added in order.
   out[0..w) = the lane sums. */
static void ft__torch_row_sum(const float *x, int64_t size, int w, float *out) {
    float acc[4][4][8];                                 /* [level][accumulator][lane]          */
    int64_t sz = size / 4, i = 0, j, step, mask;
    int lp, L, k, l, cl = 1;
    while (sz > 2 && ((int64_t)1 << cl) < sz) cl++;    /* CeilLog2 (1 for sz <= 2)            */
    lp = FT__MAX(4, cl / 4); step = (int64_t)1 << lp; mask = step - 1;
    memset(acc, 0, sizeof acc);
    while (i + step <= sz) {
        for (j = 0; j < step; j++, i++)
            for (k = 0; k < 4; k++) for (l = 0; l < w; l++) acc[0][k][l] += x[(i * 4 + k) * w + l];
        for (L = 1; L < 4; L++) {
            for (k = 0; k < 4; k++) for (l = 0; l < w; l++) { acc[L][k][l] += acc[L - 1][k][l]; acc[L - 1][k][l] = 0.0f; }
            if (i & (mask << (L * lp))) break;
        }
    }
    for (; i < sz; i++)
        for (k = 0; k < 4; k++) for (l = 0; l < w; l++) acc[0][k][l] += x[(i * 4 + k) * w + l];
    for (L = 1; L < 4; L++) for (k = 0; k < 4; k++) for (l = 0; l < w; l++) acc[0][k][l] += acc[L][k][l];
    for (i = sz * 4; i < size; i++) for (l = 0; l < w; l++) acc[0][0][l] += x[i * w + l];
    for (k = 1; k < 4; k++) for (l = 0; l < w; l++) acc[0][0][l] += acc[0][k][l];
    for (l = 0; l < w; l++) out[l] = acc[0][0][l];
}
/* torch.Tensor.mean of n f32 on the CPU, one thread: the sum of 8-lane vectors (torch's
   Vectorized<float> in its sum kernel) as above, the tail and the 8 lanes added to 0 in order,
   then / n. Fewer than 8 values: the same cascade on single values. */
static float ft__torch_mean(const float *x, int64_t n) {
    float s = 0.0f, lanes[8]; int64_t k; int l;
    if (n < 8) { ft__torch_row_sum(x, n, 1, lanes); s += lanes[0]; }
    else {
        ft__torch_row_sum(x, n / 8, 8, lanes);
        for (k = n / 8 * 8; k < n; k++) s += x[k];
        for (l = 0; l < 8; l++) s += lanes[l];
    }
    return s / (float)n;
}

/* create_dynamic_map(signed=True, 7, 8): for i = 0..6, 2^i + 1 points of torch.linspace(0.1, 1)
   in f32 (start + step*j below the middle, end - step*(steps-1-j) from it, each one FMA as
   torch's AVX2 / AVX-512 / NEON builds compile it), their pairwise means times +-10^(i-6); with
   0 and 1, sorted. (torch's DEFAULT-capability build rounds 42 of the 256 one ulp apart.) */
FT_API void ft_nf4_dynamic_map(float code[256]) {
    static const double p10[7] = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0};
    int i, j, k = 0;
    for (i = 0; i < 7; i++) {
        int steps = (1 << i) + 1, half = steps / 2;
        float lo = (float)0.1, hi = 1.0f, st = (hi - lo) / (float)(steps - 1), b[65], sc = (float)p10[i];
        for (j = 0; j < steps; j++)
            b[j] = j < half ? fmaf(st, (float)j, lo) : fmaf(-st, (float)(steps - 1 - j), hi);
        for (j = 0; j + 1 < steps; j++) {
            float mean = (b[j] + b[j + 1]) / 2.0f;
            code[k++] = sc * mean;
            code[k++] = -sc * mean;
        }
    }
    code[k++] = 0.0f; code[k++] = 1.0f;
    for (i = 1; i < 256; i++) {                              /* insertion sort, ascending    */
        float v = code[i];
        for (j = i; j > 0 && code[j - 1] > v; j--) code[j] = code[j - 1];
        code[j] = v;
    }
}

/* the number of the n sorted values in mid[] that are < v */
static int ft__count_below(const float *mid, int n, float v) {
    int lo = 0, hi = n;
    while (lo < hi) { int m = (lo + hi) / 2; if (mid[m] < v) lo = m + 1; else hi = m; }
    return lo;
}

FT_API ft_result ft_quantize_nf4(const float *x, int64_t n, uint8_t *packed, uint8_t *qabsmax,
                                 float *absmax2, float *offset) {
    float mid4[15], code[256], mid8[255], *absmax, clampmin = (float)1e-38;
    int64_t nb = ft_nf4_blocks(n), nb2 = ft_nf4_blocks2(n), b, i;
    int j;
    if (n < 1) return ft_set_error(FT_ERR_INVALID, "nf4: %lld weights", (long long)n);
    for (i = 0; i < n; i++)
        if (!(fabsf(x[i]) <= FLT_MAX)) return ft_set_error(FT_ERR_NUMERIC, "nf4: weight %lld is %g", (long long)i, (double)x[i]);
    absmax = FT__CAST(float *, FT_MALLOC((size_t)nb * sizeof(float)));
    if (!absmax) return ft_set_error(FT_ERR_NOMEM, "nf4: out of memory");
    for (j = 0; j < 15; j++) mid4[j] = (ft__nf4_values[j] + ft__nf4_values[j + 1]) / 2.0f;
    /* 4-bit codes */
    for (b = 0; b < nb; b++) {
        int64_t e0 = b * FT_NF4_BLOCK, e1 = FT__MIN(n, e0 + FT_NF4_BLOCK);
        float am = 0.0f, r;
        int full = e1 - e0 == FT_NF4_BLOCK;
        for (i = e0; i < e1; i++) am = FT__MAX(am, fabsf(x[i]));
        if (full) { absmax[b] = am; r = 1.0f / FT__MAX(am, clampmin); }
        else { absmax[b] = am = FT__MAX(am, clampmin); r = 0.0f; }
        for (i = e0; i < e1; i++) {
            float s = full ? x[i] * r : x[i] / am;
            int q = 0;                                /* midpoints < s: branchless, 4 steps     */
            q += mid4[q + 7] < s ? 8 : 0; q += mid4[q + 3] < s ? 4 : 0;
            q += mid4[q + 1] < s ? 2 : 0; q += mid4[q] < s ? 1 : 0;
            if (i & 1) packed[i >> 1] = (uint8_t)(packed[i >> 1] | q);
            else packed[i >> 1] = (uint8_t)(q << 4);
        }
    }
    if (n & 1) packed[n >> 1] = (uint8_t)(packed[n >> 1] | 7);    /* the pad: s = 0 -> index 7 */
    /* double quantization of the absmax */
    *offset = ft__torch_mean(absmax, nb);
    if (!(*offset <= FLT_MAX)) {                     /* weights near FLT_MAX: the mean overflows */
        FT_FREE(absmax);
        return ft_set_error(FT_ERR_NUMERIC, "nf4: the block scales' mean overflows (weights too large for f32 arithmetic)");
    }
    ft_nf4_dynamic_map(code);
    for (j = 0; j < 255; j++) mid8[j] = 0.5f * (code[j] + code[j + 1]);
    for (b = 0; b < nb2; b++) {
        int64_t a0 = b * FT_NF4_BLOCK2, a1 = FT__MIN(nb, a0 + FT_NF4_BLOCK2);
        float a2 = 0.0f, inv;
        for (i = a0; i < a1; i++) { absmax[i] -= *offset; a2 = FT__MAX(a2, fabsf(absmax[i])); }
        absmax2[b] = a2;
        if (a2 == 0.0f) { for (i = a0; i < a1; i++) qabsmax[i] = 0; continue; }
        inv = 1.0f / a2;
        for (i = a0; i < a1; i++) {
            float t = absmax[i] * inv, h, g; int li;
            FT__ROUNDED(t);
            t = t < -1.0f ? -1.0f : t > 1.0f ? 1.0f : t == t ? t : 0.0f;   /* 0 * inf (a subnormal a2): 0 */
            h = (t + 1.0f) * 0.5f;
            li = (int)fmaf(h, 65535.0f, 0.5f);                      /* 0 .. 65535             */
            g = -1.0f + (2.0f * (float)li) / 65535.0f;
            qabsmax[i] = (uint8_t)ft__count_below(mid8, 255, g);
        }
    }
    FT_FREE(absmax);
    return FT_OK;
}

/* the absmax of block b: code[qa] * absmax2 rounded, then + offset (two roundings, as torch) */
static float ft__nf4_absmax(const ft_nf4 *q, int64_t b) {
    float p = q->code[q->qabsmax[b]] * q->absmax2[b / FT_NF4_BLOCK2];
    FT__ROUNDED(p);
    return p + q->offset;
}
/* y[0..n) = weights e0 .. e0+n (flat): the scalar reference */
FT__MAYBE_UNUSED static void ft__nf4_decode_ref(const uint8_t *qs, const ft_nf4 *q, int64_t e0, int64_t n, float *y) {
    int64_t e = e0, end = e0 + n;
    while (e < end) {
        int64_t b = e / FT_NF4_BLOCK, stop = FT__MIN(end, (b + 1) * FT_NF4_BLOCK);
        float d = ft__nf4_absmax(q, b);
        for (; e < stop; e++) *y++ = ft__nf4_values[(e & 1) ? qs[e >> 1] & 15 : qs[e >> 1] >> 4] * d;
    }
}
/* 64 weights of one whole block (32 bytes) times d: look the 16 values up with a permute of
   a register holding them (exact: the same products as the reference) */
#if !defined(FT_NO_SIMD) && defined(__AVX512F__)
#define FT__NF4_SIMD "avx512"
static void ft__nf4_block(const uint8_t *qs, float d, float *y) {
    const __m512 lut = _mm512_loadu_ps(ft__nf4_values), vd = _mm512_set1_ps(d);
    const __m128i m4 = _mm_set1_epi8(15);
    int h;
    for (h = 0; h < 2; h++, qs += 16, y += 32) {
        __m128i v = ft__q_load16(qs), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m4), lo = _mm_and_si128(v, m4);
        __m128i a = _mm_unpacklo_epi8(hi, lo), b = _mm_unpackhi_epi8(hi, lo);   /* weights 0-15, 16-31 */
        _mm512_storeu_ps(y,      _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_cvtepu8_epi32(a), lut), vd));
        _mm512_storeu_ps(y + 16, _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_cvtepu8_epi32(b), lut), vd));
    }
}
#elif !defined(FT_NO_SIMD) && defined(__AVX2__) && defined(__FMA__)
#define FT__NF4_SIMD "avx2"
/* 8 indices: two 8-entry permutes, bit 3 (shifted into the sign) picks one */
static inline __m256 ft__nf4_lookup8(__m128i idx8, __m256 lut0, __m256 lut1) {
    __m256i i = _mm256_cvtepu8_epi32(idx8);
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lut0, i), _mm256_permutevar8x32_ps(lut1, i),
                            _mm256_castsi256_ps(_mm256_slli_epi32(i, 28)));
}
static void ft__nf4_block(const uint8_t *qs, float d, float *y) {
    const __m256 lut0 = _mm256_loadu_ps(ft__nf4_values), lut1 = _mm256_loadu_ps(ft__nf4_values + 8), vd = _mm256_set1_ps(d);
    const __m128i m4 = _mm_set1_epi8(15);
    int h;
    for (h = 0; h < 2; h++, qs += 16, y += 32) {
        __m128i v = ft__q_load16(qs), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m4), lo = _mm_and_si128(v, m4);
        __m128i a = _mm_unpacklo_epi8(hi, lo), b = _mm_unpackhi_epi8(hi, lo);
        _mm256_storeu_ps(y,      _mm256_mul_ps(ft__nf4_lookup8(a, lut0, lut1), vd));
        _mm256_storeu_ps(y + 8,  _mm256_mul_ps(ft__nf4_lookup8(_mm_srli_si128(a, 8), lut0, lut1), vd));
        _mm256_storeu_ps(y + 16, _mm256_mul_ps(ft__nf4_lookup8(b, lut0, lut1), vd));
        _mm256_storeu_ps(y + 24, _mm256_mul_ps(ft__nf4_lookup8(_mm_srli_si128(b, 8), lut0, lut1), vd));
    }
}
#elif !defined(FT_NO_SIMD) && defined(__ARM_NEON) && defined(__aarch64__)
#define FT__NF4_SIMD "neon"
/* the 16 values as a 64-byte table: float lane j of index i is bytes 4i .. 4i+3 */
static void ft__nf4_block(const uint8_t *qs, float d, float *y) {
    static const uint8_t rep[4][16] = {{0,0,0,0, 1,1,1,1, 2,2,2,2, 3,3,3,3}, {4,4,4,4, 5,5,5,5, 6,6,6,6, 7,7,7,7},
                                       {8,8,8,8, 9,9,9,9, 10,10,10,10, 11,11,11,11}, {12,12,12,12, 13,13,13,13, 14,14,14,14, 15,15,15,15}};
    static const uint8_t byte_of[16] = {0,1,2,3, 0,1,2,3, 0,1,2,3, 0,1,2,3};
    const uint8_t *lb = FT__CAST(const uint8_t *, FT__CAST(const void *, ft__nf4_values));
    uint8x16x4_t lut; uint8x16_t bo = vld1q_u8(byte_of); float32x4_t vd = vdupq_n_f32(d);
    int h, k, g;
    lut.val[0] = vld1q_u8(lb); lut.val[1] = vld1q_u8(lb + 16); lut.val[2] = vld1q_u8(lb + 32); lut.val[3] = vld1q_u8(lb + 48);
    for (h = 0; h < 2; h++, qs += 16) {
        uint8x16_t v = vld1q_u8(qs);
        uint8x16x2_t z = vzipq_u8(vshrq_n_u8(v, 4), vandq_u8(v, vdupq_n_u8(15)));   /* weights 0-15, 16-31 */
        for (k = 0; k < 2; k++)
            for (g = 0; g < 4; g++, y += 4) {
                uint8x16_t bidx = vaddq_u8(vshlq_n_u8(vqtbl1q_u8(z.val[k], vld1q_u8(rep[g])), 2), bo);
                vst1q_f32(y, vmulq_f32(vreinterpretq_f32_u8(vqtbl4q_u8(lut, bidx)), vd));
            }
    }
}
#else
#define FT__NF4_SIMD "scalar"
static void ft__nf4_block(const uint8_t *qs, float d, float *y) {
    int j;
    for (j = 0; j < 32; j++) { y[2 * j] = ft__nf4_values[qs[j] >> 4] * d; y[2 * j + 1] = ft__nf4_values[qs[j] & 15] * d; }
}
#endif
/* y[0..n) = weights e0 .. e0+n (flat): whole blocks through ft__nf4_block, the rest as the
   reference. Streaming a big weight from memory (the GEMV of generation), the nibbles are
   prefetched 16 blocks ahead: measured 1.7x faster here, ahead of Q4_1 with its 21% more bytes
   (without it NF4's decode stalls longer than Q4_1's, whose row is a single stream). */
static void ft__nf4_decode(const uint8_t *qs, const ft_nf4 *q, int64_t e0, int64_t n, float *y) {
    int64_t e = e0, end = e0 + n;
    while (e < end) {
        int64_t b = e / FT_NF4_BLOCK, stop = FT__MIN(end, (b + 1) * FT_NF4_BLOCK);
        FT__PREFETCH(qs + e / 2 + 512);               /* never faults, even past the end      */
        if (e == b * FT_NF4_BLOCK && stop - e == FT_NF4_BLOCK) ft__nf4_block(qs + e / 2, ft__nf4_absmax(q, b), y);
        else ft__nf4_decode_ref(qs, q, e, stop - e, y);
        y += stop - e; e = stop;
    }
}
FT_API void ft_dequantize_nf4(const uint8_t *packed, const ft_nf4 *q, int64_t i0, int64_t n, float *y) {
    ft__nf4_decode(packed, q, i0, n, y);
}

/* dst[0..kc) = W[n][k0 .. k0+kc) as f32, W (N, K) in any storage type with a decoder (for the
   GGML types k0 and kc are multiples of the block) */
static void ft__weight_row(const ft_tensor *W, int64_t n, int64_t k0, int64_t kc, float *dst) {
    int64_t K = W->shape[W->ndim - 1];
    if (W->type == FT_TYPE_NF4) ft__nf4_decode(FT__CAST(const uint8_t *, W->data), W->nf4, n * K + k0, kc, dst);
    else {
        const ft__type_info *ti = ft__type(W->type);
        ti->to_f32(FT__CAST(const unsigned char *, W->data) + (size_t)n * ft_type_row_bytes(W->type, K)
                   + (size_t)(k0 / ti->block) * (size_t)ti->bytes, dst, kc);
    }
}
/* can the matmul and embedding read W through ft__weight_row? (rows of K weights) */
static int ft__weight_decodable(const ft_tensor *W, int64_t K) {
    const ft__type_info *ti;
    if (W->type == FT_TYPE_NF4) return W->nf4 != NULL && !W->view_of;
    ti = ft__type(W->type);
    return ti && ti->to_f32 && K % ti->block == 0;
}

/* ---- the rows of ft__types[] these fill (indexed by ggml type id; unchanged from today's):
    2 {"q4_0", 32, 18, ft__dequant_q4_0}     3 {"q4_1", 32, 20, ft__dequant_q4_1}
    6 {"q5_0", 32, 22, ft__dequant_q5_0}     7 {"q5_1", 32, 24, ft__dequant_q5_1}
    8 {"q8_0", 32, 34, ft__dequant_q8_0}    10 {"q2_K", 256, 84, ft__dequant_q2_k}
   11 {"q3_K", 256, 110, ft__dequant_q3_k}  12 {"q4_K", 256, 144, ft__dequant_q4_k}
   13 {"q5_K", 256, 176, ft__dequant_q5_k}  14 {"q6_K", 256, 210, ft__dequant_q6_k}
   20 {"iq4_nl", 32, 18, ft__dequant_iq4_nl}
   encoders (for a from_f32 column, should the table grow one): 2 ft__quant_q4_0,
   3 ft__quant_q4_1, 8 ft__quant_q8_0 ---- */


/* ============================================================================================
   [gguf] GGUF v2/v3 reader (mmap, zero-copy tensor data, every field bounds-checked) and writer
   (atomic: temporary file, fsync, rename).
   Layout: u32 "GGUF", u32 version, u64 n_tensors, u64 n_kv; n_kv x (string key, u32 type,
   value); n_tensors x (string name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset); zero
   padding to general.alignment (default 32); tensor data. Strings are u64 length + bytes.
   safetensors (Hugging Face's PEFT adapters; bounds-checked reader, f32 writer): u64 N
   (little-endian), N bytes of JSON {"name": {"dtype", "shape", "data_offsets": [begin, end]},
   "__metadata__": {...}}, padded with spaces to 8 bytes; then the data.
   ============================================================================================ */
#include <errno.h>
#if !defined(_WIN32)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

typedef struct ft__gguf_kept { void *p; ft_safetensors *st; } ft__gguf_kept;   /* memory or a mapping */
struct ft_gguf {
    char *path;
    const unsigned char *base; size_t size;     /* the whole file                             */
    int mapped;                                 /* 1: munmap, 0: FT_FREE                      */
    uint32_t version;
    size_t alignment, data_off;
    ft_gguf_kv *kv; int64_t n_kv;
    ft_gguf_tensor *t; int64_t n_t;
    ft_gguf_str *strs;                          /* storage behind every kv's strs             */
    int external;                               /* tensor data lives elsewhere (a [hf] model)  */
    ft__gguf_kept *kept;                        /* what it holds for them                      */
    int64_t n_kept, cap_kept;
};

static const size_t ft__gguf_scalar_size[FT_GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
static const char *ft__gguf_type_name(int t) {
    static const char *n[FT_GGUF_TYPE_COUNT] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"};
    return t >= 0 && t < FT_GGUF_TYPE_COUNT ? n[t] : "?";
}

/* a bounds-checked cursor; every failure names the file and the offset */
typedef struct ft__rd { const unsigned char *p; size_t off, size; const char *path; ft_result err; } ft__rd;

static int ft__rd_fail(ft__rd *r, const char *what) {
    if (r->err == FT_OK) r->err = ft_set_error(FT_ERR_FORMAT, "%s: offset %zu: %s", r->path, r->off, what);
    return 0;
}
static int ft__rd_bytes(ft__rd *r, void *dst, size_t n, const char *what) {
    if (r->err != FT_OK) return 0;
    if (n > r->size - r->off) {
        char msg[160];
        snprintf(msg, sizeof msg, "%s: needs %zu bytes, %zu left (truncated file?)", what, n, r->size - r->off);
        return ft__rd_fail(r, msg);
    }
    if (dst) memcpy(dst, r->p + r->off, n);
    r->off += n;
    return 1;
}
static uint32_t ft__rd_u32(ft__rd *r, const char *what) { uint32_t v = 0; ft__rd_bytes(r, &v, 4, what); return v; }
static uint64_t ft__rd_u64(ft__rd *r, const char *what) { uint64_t v = 0; ft__rd_bytes(r, &v, 8, what); return v; }
static int ft__rd_str(ft__rd *r, ft_gguf_str *s, const char *what) {
    uint64_t n = ft__rd_u64(r, what);
    if (r->err != FT_OK) return 0;
    if (n > r->size - r->off) {
        char msg[160];
        snprintf(msg, sizeof msg, "%s: string length %llu exceeds the %zu bytes left", what, (unsigned long long)n, r->size - r->off);
        r->off -= 8;
        return ft__rd_fail(r, msg);
    }
    s->s = (const char *)(r->p + r->off); s->n = n;
    r->off += (size_t)n;
    return 1;
}

static int ft__str_eq(ft_gguf_str s, const char *c) { size_t n = strlen(c); return s.n == n && memcmp(s.s, c, n) == 0; }

/* first pass over one value: validate and count strings (so one array holds them all) */
static int ft__gguf_skip_value(ft__rd *r, uint32_t type, int depth, uint64_t *n_strs) {
    if (type == FT_GGUF_STRING) { ft_gguf_str s; (*n_strs)++; return ft__rd_str(r, &s, "string value"); }
    if (type == FT_GGUF_ARRAY) {
        uint32_t et = ft__rd_u32(r, "array element type");
        uint64_t n = ft__rd_u64(r, "array length"), i;
        if (r->err != FT_OK) return 0;
        if (depth > 0 && et == FT_GGUF_ARRAY) return ft__rd_fail(r, "arrays nested deeper than 2 levels");
        if (et >= FT_GGUF_TYPE_COUNT) return ft__rd_fail(r, "array of an unknown value type");
        if (et == FT_GGUF_STRING || et == FT_GGUF_ARRAY) {
            if (n > (r->size - r->off) / 8) return ft__rd_fail(r, "array length larger than the file allows");
            for (i = 0; i < n; i++) if (!ft__gguf_skip_value(r, et, depth + 1, n_strs)) return 0;
            return 1;
        }
        if (n > (r->size - r->off) / ft__gguf_scalar_size[et]) return ft__rd_fail(r, "array length larger than the file allows");
        return ft__rd_bytes(r, NULL, (size_t)n * ft__gguf_scalar_size[et], "array data");
    }
    if (type >= FT_GGUF_TYPE_COUNT) return ft__rd_fail(r, "unknown value type");
    return ft__rd_bytes(r, NULL, ft__gguf_scalar_size[type], "scalar value");
}

/* pass 2 over the metadata (validated by pass 1): key i indexed, duplicates refused */
static ft_result ft__gguf_index_kv(ft_gguf *g, ft__rd *r, uint64_t i, uint64_t *si) {
    ft_gguf_kv *kv = &g->kv[i]; int64_t j; uint64_t k;
    memset(kv, 0, sizeof *kv);
    ft__rd_str(r, &kv->key, "metadata key");
    for (j = 0; j < (int64_t)i; j++)
        if (g->kv[j].key.n == kv->key.n && memcmp(g->kv[j].key.s, kv->key.s, (size_t)kv->key.n) == 0) {
            char msg[200];
            snprintf(msg, sizeof msg, "duplicate metadata key '%.*s'", (int)FT__MIN(kv->key.n, 100), kv->key.s);
            return ft__rd_fail(r, msg), r->err;
        }
    kv->type = (ft_gguf_type)ft__rd_u32(r, "value type");
    kv->n = 1;
    kv->arr_type = kv->type;
    if (kv->type == FT_GGUF_ARRAY) {
        kv->arr_type = (ft_gguf_type)ft__rd_u32(r, "array element type");
        kv->n = ft__rd_u64(r, "array length");
    }
    kv->data = r->p + r->off;
    if (kv->arr_type == FT_GGUF_STRING) {
        kv->strs = g->strs + *si;
        for (k = 0; k < kv->n; k++) ft__rd_str(r, &g->strs[(*si)++], "string");
    } else if (kv->arr_type == FT_GGUF_ARRAY) {      /* nested arrays: kept as raw bytes     */
        for (k = 0; k < kv->n; k++) {
            uint64_t dummy = 0;
            ft__gguf_skip_value(r, FT_GGUF_ARRAY, 1, &dummy);
            *si += dummy;                            /* their strings are counted, not indexed */
        }
    } else ft__rd_bytes(r, NULL, (size_t)kv->n * ft__gguf_scalar_size[kv->arr_type], "value");
    return r->err;
}
/* tensor info i: name, 1..4 dimensions of sane size, a known type whose block divides the row,
   an aligned offset, a name not seen before */
static ft_result ft__gguf_tensor_info(ft_gguf *g, ft__rd *r, uint64_t i) {
    ft_gguf_tensor *t = &g->t[i]; uint32_t nd, k, type; int64_t nel = 1, j; char what[160];
    size_t info_off = r->off;
    memset(t, 0, sizeof *t);
    if (!ft__rd_str(r, &t->name, "tensor name")) return r->err;
    snprintf(what, sizeof what, "tensor '%.*s'", (int)FT__MIN(t->name.n, 64), t->name.s);
    nd = ft__rd_u32(r, "tensor dimension count");
    if (r->err == FT_OK && (nd < 1 || nd > 4)) { r->off -= 4; strcat(what, ": n_dims not in 1..4"); return ft__rd_fail(r, what), r->err; }
    t->n_dims = (int)nd;
    for (k = 0; k < 4; k++) t->ne[k] = 1;
    for (k = 0; k < nd && r->err == FT_OK; k++) {
        uint64_t ne = ft__rd_u64(r, "tensor dimension");
        if (r->err == FT_OK && (ne > ((uint64_t)1 << 40) || (ne && (uint64_t)nel > ((uint64_t)1 << 42) / ne))) {
            r->off -= 8; strcat(what, ": absurd dimension"); return ft__rd_fail(r, what), r->err;
        }
        t->ne[k] = (int64_t)ne; nel *= (int64_t)ne;
    }
    type = ft__rd_u32(r, "tensor type");
    t->offset = ft__rd_u64(r, "tensor data offset");
    if (r->err != FT_OK) return r->err;
    t->type = (ft_type)type;
    if (!ft__type(t->type)) { r->off -= 12; strcat(what, ": unknown tensor type"); return ft__rd_fail(r, what), r->err; }
    if (t->ne[0] % ft__type(t->type)->block) { r->off = info_off; strcat(what, ": row length not a multiple of the type's block"); return ft__rd_fail(r, what), r->err; }
    t->nbytes = t->ne[0] == 0 ? 0 : ft_type_row_bytes(t->type, t->ne[0]) * (size_t)(nel / t->ne[0]);
    if (t->offset % g->alignment) { r->off -= 8; strcat(what, ": data offset not aligned"); return ft__rd_fail(r, what), r->err; }
    for (j = 0; j < (int64_t)i; j++)
        if (g->t[j].name.n == t->name.n && memcmp(g->t[j].name.s, t->name.s, (size_t)t->name.n) == 0) {
            r->off = info_off; strcat(what, ": duplicate tensor name"); return ft__rd_fail(r, what), r->err;
        }
    return FT_OK;
}
/* the data section after the infos, padded to the alignment; every tensor's bytes inside the file */
static ft_result ft__gguf_place_tensors(ft_gguf *g, ft__rd *r) {
    int64_t i;
    g->data_off = (r->off + g->alignment - 1) / g->alignment * g->alignment;
    if (g->data_off > g->size) { r->off = g->size; ft__rd_fail(r, "the tensor data section is missing (truncated file)"); return r->err; }
    for (i = 0; i < g->n_t; i++) {
        ft_gguf_tensor *t = &g->t[i];
        if (t->offset > g->size - g->data_off || t->nbytes > g->size - g->data_off - t->offset) {
            char msg[200];
            r->off = g->data_off + (size_t)FT__MIN(t->offset, (uint64_t)(g->size - g->data_off));
            snprintf(msg, sizeof msg, "tensor '%.*s': data [%llu, +%zu) runs past the end of the file (%zu bytes of data)",
                     (int)FT__MIN(t->name.n, 64), t->name.s, (unsigned long long)t->offset, t->nbytes, g->size - g->data_off);
            return ft__rd_fail(r, msg), r->err;
        }
        t->data = g->base + g->data_off + t->offset;
    }
    return FT_OK;
}
static ft_result ft__gguf_parse(ft_gguf *g) {
    ft__rd r; uint64_t n_t, n_kv, i, n_strs = 0, si = 0; size_t kv_start; int64_t a;
    uint32_t magic;
    memset(&r, 0, sizeof r);
    r.p = g->base; r.size = g->size; r.path = g->path;
    magic = ft__rd_u32(&r, "magic");
    if (r.err == FT_OK && magic != 0x46554747u) { r.off = 0; ft__rd_fail(&r, "not a GGUF file (bad magic)"); }
    g->version = ft__rd_u32(&r, "version");
    if (r.err == FT_OK && (g->version < 2 || g->version > 3)) { r.off -= 4; ft__rd_fail(&r, "unsupported GGUF version (2 and 3 are)"); }
    n_t = ft__rd_u64(&r, "tensor count");
    n_kv = ft__rd_u64(&r, "metadata count");
    if (r.err != FT_OK) return r.err;
    if (n_t > g->size / 32 || n_kv > g->size / 13) { r.off -= 16; ft__rd_fail(&r, "tensor or metadata count larger than the file allows"); return r.err; }
    kv_start = r.off;                                /* pass 1: validate the metadata, count strings */
    for (i = 0; i < n_kv; i++) {
        ft_gguf_str key;
        if (!ft__rd_str(&r, &key, "metadata key")) return r.err;
        if (!ft__gguf_skip_value(&r, ft__rd_u32(&r, "value type"), 0, &n_strs)) return r.err;
    }
    g->kv = FT__CAST(ft_gguf_kv *, FT_MALLOC((size_t)FT__MAX(n_kv, 1) * sizeof(ft_gguf_kv)));
    g->strs = FT__CAST(ft_gguf_str *, FT_MALLOC((size_t)FT__MAX(n_strs, 1) * sizeof(ft_gguf_str)));
    g->t = FT__CAST(ft_gguf_tensor *, FT_MALLOC((size_t)FT__MAX(n_t, 1) * sizeof(ft_gguf_tensor)));
    if (!g->kv || !g->strs || !g->t) return ft_set_error(FT_ERR_NOMEM, "%s: out of memory for the metadata index", g->path);
    r.off = kv_start;
    for (i = 0; i < n_kv; i++)
        if (ft__gguf_index_kv(g, &r, i, &si) != FT_OK) return r.err;
    g->n_kv = (int64_t)n_kv;
    g->alignment = 32;
    if (ft_gguf_get_int(g, "general.alignment", &a)) {
        if (a < 1 || a > 65536 || (a & (a - 1))) return ft__rd_fail(&r, "general.alignment is not a power of two in [1, 65536]"), r.err;
        g->alignment = (size_t)a;
    }
    for (i = 0; i < n_t; i++)
        if (ft__gguf_tensor_info(g, &r, i) != FT_OK) return r.err;
    g->n_t = (int64_t)n_t;
    return g->external ? FT_OK : ft__gguf_place_tensors(g, &r);
}

static ft_result ft__gguf_new(ft_gguf **out, const char *name) {
    ft_gguf *g = FT__CAST(ft_gguf *, FT_MALLOC(sizeof *g));
    size_t n = strlen(name) + 1;
    *out = NULL;
    if (!g) return ft_set_error(FT_ERR_NOMEM, "%s: out of memory", name);
    memset(g, 0, sizeof *g);
    g->path = FT__CAST(char *, FT_MALLOC(n));
    if (!g->path) { FT_FREE(g); return ft_set_error(FT_ERR_NOMEM, "%s: out of memory", name); }
    memcpy(g->path, name, n);
    *out = g;
    return FT_OK;
}

static ft_result ft__gguf_open_hf(ft_gguf **out, const char *dir);
/* a GGUF file, or a Hugging Face model directory read as one ([hf]) */
FT_API ft_result ft_gguf_open(ft_gguf **out, const char *path) {
    ft_gguf *g; ft_result r;
    *out = NULL;
#if !defined(_WIN32)
    {
        struct stat st;
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return ft__gguf_open_hf(out, path);
    }
#endif
    if ((r = ft__gguf_new(&g, path)) != FT_OK) return r;
#if !defined(_WIN32)
    {
        struct stat st; int fd = open(path, O_RDONLY);
        if (fd < 0) { ft_gguf_close(g); return ft_set_error(FT_ERR_IO, "%s: cannot open: %s", path, strerror(errno)); }
        if (fstat(fd, &st) != 0 || st.st_size < 0) { close(fd); ft_gguf_close(g); return ft_set_error(FT_ERR_IO, "%s: cannot stat", path); }
        g->size = (size_t)st.st_size;
        if (g->size > 0) {
            void *p = mmap(NULL, g->size, PROT_READ, MAP_PRIVATE, fd, 0);
            if (p == MAP_FAILED) { close(fd); ft_gguf_close(g); return ft_set_error(FT_ERR_IO, "%s: mmap failed: %s", path, strerror(errno)); }
            g->base = FT__CAST(const unsigned char *, p); g->mapped = 1;
        }
        close(fd);
    }
#else
    {
        FILE *f = fopen(path, "rb"); long n; unsigned char *buf;
        if (!f) { ft_gguf_close(g); return ft_set_error(FT_ERR_IO, "%s: cannot open", path); }
        fseek(f, 0, SEEK_END); n = ftell(f); fseek(f, 0, SEEK_SET);
        buf = FT__CAST(unsigned char *, FT_MALLOC((size_t)FT__MAX(n, 1)));
        if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) { fclose(f); FT_FREE(buf); ft_gguf_close(g); return ft_set_error(FT_ERR_IO, "%s: read failed", path); }
        fclose(f);
        g->base = buf; g->size = (size_t)n;
    }
#endif
    if ((r = ft__gguf_parse(g)) != FT_OK) { ft_gguf_close(g); return r; }
    *out = g;
    return FT_OK;
}

FT_API ft_result ft_gguf_open_memory(ft_gguf **out, const void *data, size_t size, const char *name) {
    ft_gguf *g; ft_result r;
    if ((r = ft__gguf_new(&g, name ? name : "<memory>")) != FT_OK) return r;
    g->base = FT__CAST(const unsigned char *, data); g->size = size; g->mapped = -1;   /* not owned */
    if ((r = ft__gguf_parse(g)) != FT_OK) { ft_gguf_close(g); *out = NULL; return r; }
    *out = g;
    return FT_OK;
}

FT_API void ft_gguf_close(ft_gguf *g) {
    int64_t i;
    if (!g) return;
#if !defined(_WIN32)
    if (g->mapped == 1 && g->base) munmap(FT__CAST(void *, g->base), g->size);
#endif
    if (g->mapped == 0) FT_FREE(FT__CAST(void *, g->base));
    for (i = 0; i < g->n_kept; i++) {
        if (g->kept[i].st) ft_safetensors_close(g->kept[i].st);
        else ft__aligned_free(g->kept[i].p);
    }
    FT_FREE(g->kept); FT_FREE(g->kv); FT_FREE(g->strs); FT_FREE(g->t); FT_FREE(g->path);
    FT_FREE(g);
}
/* memory (bytes, 64-byte aligned) or a safetensors file that g keeps until it is closed: the
   memory, or st; NULL when out of memory */
static void *ft__gguf_keep(ft_gguf *g, size_t bytes, ft_safetensors *st) {
    void *p;
    if (g->n_kept == g->cap_kept) {
        int64_t nc = g->cap_kept ? 2 * g->cap_kept : 64;
        ft__gguf_kept *k = FT__CAST(ft__gguf_kept *, FT_REALLOC(g->kept, (size_t)nc * sizeof *k));
        if (!k) return NULL;
        g->kept = k; g->cap_kept = nc;
    }
    p = st ? FT__CAST(void *, st) : ft__aligned_alloc(FT__MAX(bytes, 1));
    if (!p) return NULL;
    g->kept[g->n_kept].p = st ? NULL : p;
    g->kept[g->n_kept].st = st;
    g->n_kept++;
    return p;
}

FT_API const char *ft_gguf_path(const ft_gguf *g) { return g->path; }
FT_API uint32_t ft_gguf_version(const ft_gguf *g) { return g->version; }
FT_API size_t ft_gguf_alignment(const ft_gguf *g) { return g->alignment; }
FT_API int64_t ft_gguf_n_kv(const ft_gguf *g) { return g->n_kv; }
FT_API const ft_gguf_kv *ft_gguf_kv_at(const ft_gguf *g, int64_t i) { return i >= 0 && i < g->n_kv ? &g->kv[i] : NULL; }
FT_API const ft_gguf_kv *ft_gguf_find(const ft_gguf *g, const char *key) {
    int64_t i;
    for (i = 0; i < g->n_kv; i++) if (ft__str_eq(g->kv[i].key, key)) return &g->kv[i];
    return NULL;
}
FT_API int64_t ft_gguf_n_tensors(const ft_gguf *g) { return g->n_t; }
FT_API const ft_gguf_tensor *ft_gguf_tensor_at(const ft_gguf *g, int64_t i) { return i >= 0 && i < g->n_t ? &g->t[i] : NULL; }
FT_API const ft_gguf_tensor *ft_gguf_find_tensor(const ft_gguf *g, const char *name) {
    int64_t i;
    for (i = 0; i < g->n_t; i++) if (ft__str_eq(g->t[i].name, name)) return &g->t[i];
    return NULL;
}
/* every tensor a model computes with (a type with a decoder) decodes to finite values: each read
   once, 4096 values at a time; FT_ERR_NUMERIC names the file, the tensor and the element */
FT_API ft_result ft_gguf_check_finite(const ft_gguf *g) {
    float buf[4096]; int64_t i, k, n, j;
    for (i = 0; i < g->n_t; i++) {
        const ft_gguf_tensor *t = &g->t[i]; const ft__type_info *ti = ft__type(t->type);
        if (!ti || !ti->to_f32) continue;
        n = (int64_t)(t->nbytes / (size_t)ti->bytes) * ti->block;
        for (k = 0; k < n; k += 4096) {
            int64_t c = FT__MIN(4096, n - k);
            ti->to_f32(FT__CAST(const char *, t->data) + k / ti->block * ti->bytes, buf, c);
            if ((j = ft__nonfinite(buf, c)) >= 0)
                return ft_set_error(FT_ERR_NUMERIC, "%s: tensor '%.*s' element %lld is %g", g->path, (int)FT__MIN(t->name.n, 200), t->name.s, (long long)(k + j), (double)buf[j]);
        }
    }
    return FT_OK;
}

/* a float as an integer without undefined behaviour: truncated, saturated at the int64 range, NaN 0 */
static int64_t ft__f2i(double v) {
    if (v != v) return 0;
    if (v >= 9.2233720368547758e18) return INT64_MAX;
    if (v <= -9.2233720368547758e18) return INT64_MIN;
    return (int64_t)v;
}
/* element i of a numeric value or array, as int64 / double (0 when not numeric) */
FT_API int64_t ft_gguf_kv_int(const ft_gguf_kv *kv, uint64_t i) {
    const unsigned char *p;
    if (i >= kv->n || kv->arr_type >= FT_GGUF_TYPE_COUNT || !ft__gguf_scalar_size[kv->arr_type]) return 0;
    p = FT__CAST(const unsigned char *, kv->data) + i * ft__gguf_scalar_size[kv->arr_type];
    switch (kv->arr_type) {
    case FT_GGUF_UINT8: case FT_GGUF_BOOL: return p[0];
    case FT_GGUF_INT8:   return (int8_t)p[0];
    case FT_GGUF_UINT16: { uint16_t v; memcpy(&v, p, 2); return v; }
    case FT_GGUF_INT16:  { int16_t v; memcpy(&v, p, 2); return v; }
    case FT_GGUF_UINT32: { uint32_t v; memcpy(&v, p, 4); return v; }
    case FT_GGUF_INT32:  { int32_t v; memcpy(&v, p, 4); return v; }
    case FT_GGUF_UINT64: { uint64_t v; memcpy(&v, p, 8); return (int64_t)v; }    /* the bit pattern (RNG states) */
    case FT_GGUF_INT64:  { int64_t v; memcpy(&v, p, 8); return v; }
    case FT_GGUF_FLOAT32: { float v; memcpy(&v, p, 4); return ft__f2i(v); }
    case FT_GGUF_FLOAT64: { double v; memcpy(&v, p, 8); return ft__f2i(v); }
    default: return 0;
    }
}
FT_API double ft_gguf_kv_float(const ft_gguf_kv *kv, uint64_t i) {
    const unsigned char *p;
    if (i >= kv->n || kv->arr_type >= FT_GGUF_TYPE_COUNT || !ft__gguf_scalar_size[kv->arr_type]) return 0;
    p = FT__CAST(const unsigned char *, kv->data) + i * ft__gguf_scalar_size[kv->arr_type];
    if (kv->arr_type == FT_GGUF_FLOAT32) { float v; memcpy(&v, p, 4); return v; }
    if (kv->arr_type == FT_GGUF_FLOAT64) { double v; memcpy(&v, p, 8); return v; }
    return (double)ft_gguf_kv_int(kv, i);
}
static int ft__gguf_is_num(const ft_gguf_kv *kv) {
    return kv && kv->type != FT_GGUF_ARRAY && kv->type != FT_GGUF_STRING && kv->type < FT_GGUF_TYPE_COUNT;
}
FT_API int ft_gguf_get_int(const ft_gguf *g, const char *key, int64_t *out) {
    const ft_gguf_kv *kv = ft_gguf_find(g, key);
    if (!ft__gguf_is_num(kv) || kv->type == FT_GGUF_FLOAT32 || kv->type == FT_GGUF_FLOAT64) return 0;
    *out = ft_gguf_kv_int(kv, 0);
    return 1;
}
FT_API int ft_gguf_get_float(const ft_gguf *g, const char *key, double *out) {
    const ft_gguf_kv *kv = ft_gguf_find(g, key);
    if (!ft__gguf_is_num(kv)) return 0;
    *out = ft_gguf_kv_float(kv, 0);
    return 1;
}
FT_API int ft_gguf_get_str(const ft_gguf *g, const char *key, ft_gguf_str *out) {
    const ft_gguf_kv *kv = ft_gguf_find(g, key);
    if (!kv || kv->type != FT_GGUF_STRING) return 0;
    *out = kv->strs[0];
    return 1;
}

/* ---- directories: mkdir -p, for a directory or for the file about to be written in it ---------- */
#if defined(_WIN32)
#include <direct.h>
#define FT__MKDIR(d) _mkdir(d)
#ifndef S_ISDIR
#define S_ISDIR(m) (((m) & _S_IFMT) == _S_IFDIR)
#endif
#else
#define FT__MKDIR(d) mkdir(d, 0755)
#endif

/* one level; a file of that name, a read-only place or a full disk is said with the path */
static ft_result ft__mkdir_one(const char *dir) {
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (S_ISDIR(st.st_mode)) return FT_OK;
        return ft_set_error(FT_ERR_IO, "%s: cannot create a directory there: it is a file (not a directory)", dir);
    }
    if (FT__MKDIR(dir) == 0 || (errno == EEXIST && stat(dir, &st) == 0 && S_ISDIR(st.st_mode))) return FT_OK;
    return ft_set_error(FT_ERR_IO, "%s: cannot create the directory: %s", dir, strerror(errno));
}

FT_API ft_result ft_mkdirs(const char *dir) {
    char buf[4096];
    size_t n = strlen(dir), i;
    if (n == 0) return FT_OK;
    if (n >= sizeof buf) return ft_set_error(FT_ERR_INVALID, "%.60s...: a path of %zu bytes (at most %zu)", dir, n, sizeof buf - 1);
    memcpy(buf, dir, n + 1);
    for (i = 1; i <= n; i++) {                   /* each prefix that ends before a '/', then all */
        ft_result r;
        if ((buf[i] != '/' && buf[i] != 0) || buf[i - 1] == '/') continue;
        buf[i] = 0;
        r = ft__mkdir_one(buf);
        buf[i] = dir[i];
        if (r != FT_OK) return r;
    }
    return FT_OK;
}

FT_API ft_result ft_mkdirs_parent(const char *path) {
    char buf[4096];
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 0;
    if (n == 0) return FT_OK;                    /* the current directory, or / */
    if (n >= sizeof buf) return ft_set_error(FT_ERR_INVALID, "%.60s...: a path of %zu bytes (at most %zu)", path, n, sizeof buf - 1);
    memcpy(buf, path, n);
    buf[n] = 0;
    return ft_mkdirs(buf);
}

/* ---- atomic file writes: write to PATH.tmp, flush, fsync, rename over PATH --------------------- */
typedef struct ft__afile {
    int fd; char *tmp; const char *path; int failed;
    int in_mem; unsigned char *mem; size_t mem_n, mem_cap;   /* in_mem: bytes gathered in mem */
} ft__afile;

static ft_result ft__afile_open(ft__afile *a, const char *path) {
    size_t n = strlen(path);
    ft_result r = ft_mkdirs_parent(path);
    memset(a, 0, sizeof *a);
    if (r != FT_OK) return r;
    a->path = path;
    a->tmp = FT__CAST(char *, FT_MALLOC(n + 5));
    if (!a->tmp) return ft_set_error(FT_ERR_NOMEM, "%s: out of memory", path);
    memcpy(a->tmp, path, n); memcpy(a->tmp + n, ".tmp", 5);
#if !defined(_WIN32)
    a->fd = open(a->tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
#else
    a->fd = _open(a->tmp, _O_WRONLY | _O_CREAT | _O_TRUNC | _O_BINARY, 0644);
#endif
    if (a->fd < 0) { ft_result r = ft_set_error(FT_ERR_IO, "%s: cannot create: %s", a->tmp, strerror(errno)); FT_FREE(a->tmp); a->tmp = NULL; return r; }
    return FT_OK;
}
static void ft__afile_write(ft__afile *a, const void *p, size_t n) {
    const char *c = FT__CAST(const char *, p);
    if (a->in_mem && !a->failed) {
        if (a->mem_n + n > a->mem_cap) {
            size_t nc = FT__MAX(2 * a->mem_cap, a->mem_n + n + 4096);
            unsigned char *m = FT__CAST(unsigned char *, FT_REALLOC(a->mem, nc));
            if (!m) { a->failed = 1; return; }
            a->mem = m; a->mem_cap = nc;
        }
        memcpy(a->mem + a->mem_n, p, n);
        a->mem_n += n;
        return;
    }
    while (!a->failed && n > 0) {
        long k = (long)write(a->fd, c, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
        if (k <= 0) { if (k < 0 && errno == EINTR) continue; a->failed = 1; break; }
        c += k; n -= (size_t)k;
    }
}
static ft_result ft__afile_commit(ft__afile *a) {
    ft_result r = FT_OK;
#if !defined(_WIN32)
    if (!a->failed && fsync(a->fd) != 0) a->failed = 1;
#endif
    if (close(a->fd) != 0) a->failed = 1;
    if (a->failed) r = ft_set_error(FT_ERR_IO, "%s: write failed (disk full?): %s", a->tmp, strerror(errno));
    else if (rename(a->tmp, a->path) != 0) r = ft_set_error(FT_ERR_IO, "%s: rename to %s failed: %s", a->tmp, a->path, strerror(errno));
    if (r != FT_OK) remove(a->tmp);
    FT_FREE(a->tmp);
    return r;
}

/* ---- writer ------------------------------------------------------------------------------------- */
typedef struct ft__gguf_wkv { char *key; unsigned char *val; size_t len; } ft__gguf_wkv;   /* val: type + value bytes */
typedef struct ft__gguf_wt { char *name; ft_type type; int n_dims; int64_t ne[4]; const void *data; size_t nbytes; } ft__gguf_wt;
struct ft_gguf_writer {
    ft__gguf_wkv *kv; int64_t n_kv, cap_kv;
    ft__gguf_wt *t; int64_t n_t, cap_t;
    size_t alignment;
};

FT_API ft_result ft_gguf_writer_init(ft_gguf_writer **out) {
    ft_gguf_writer *w = FT__CAST(ft_gguf_writer *, FT_MALLOC(sizeof *w));
    *out = NULL;
    if (!w) return ft_set_error(FT_ERR_NOMEM, "gguf writer: out of memory");
    memset(w, 0, sizeof *w);
    w->alignment = 32;
    *out = w;
    return FT_OK;
}
FT_API void ft_gguf_writer_free(ft_gguf_writer *w) {
    int64_t i;
    if (!w) return;
    for (i = 0; i < w->n_kv; i++) { FT_FREE(w->kv[i].key); FT_FREE(w->kv[i].val); }
    for (i = 0; i < w->n_t; i++) FT_FREE(w->t[i].name);
    FT_FREE(w->kv); FT_FREE(w->t); FT_FREE(w);
}

static char *ft__strndup(const char *s, size_t n) {
    char *d = FT__CAST(char *, FT_MALLOC(n + 1));
    if (d) { memcpy(d, s, n); d[n] = 0; }
    return d;
}

/* store (type, value bytes) under key, replacing an earlier value */
static ft_result ft__gguf_wset(ft_gguf_writer *w, const char *key, const void *val, size_t len) {
    int64_t i;
    unsigned char *v = FT__CAST(unsigned char *, FT_MALLOC(FT__MAX(len, 1)));
    if (!v) return ft_set_error(FT_ERR_NOMEM, "gguf writer: out of memory");
    memcpy(v, val, len);
    for (i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, key) == 0) { FT_FREE(w->kv[i].val); w->kv[i].val = v; w->kv[i].len = len; return FT_OK; }
    if (w->n_kv == w->cap_kv) {
        int64_t nc = w->cap_kv ? 2 * w->cap_kv : 32;
        ft__gguf_wkv *nk = FT__CAST(ft__gguf_wkv *, FT_REALLOC(w->kv, (size_t)nc * sizeof *nk));
        if (!nk) { FT_FREE(v); return ft_set_error(FT_ERR_NOMEM, "gguf writer: out of memory"); }
        w->kv = nk; w->cap_kv = nc;
    }
    w->kv[w->n_kv].key = ft__strndup(key, strlen(key));
    if (!w->kv[w->n_kv].key) { FT_FREE(v); return ft_set_error(FT_ERR_NOMEM, "gguf writer: out of memory"); }
    w->kv[w->n_kv].val = v; w->kv[w->n_kv].len = len;
    w->n_kv++;
    if (strcmp(key, "general.alignment") == 0 && len >= 8) {
        uint32_t a; memcpy(&a, FT__CAST(unsigned char *, v) + 4, 4);
        if (a && !(a & (a - 1))) w->alignment = a;
    }
    return FT_OK;
}

FT_API ft_result ft_gguf_set_int(ft_gguf_writer *w, const char *key, ft_gguf_type type, int64_t v) {
    unsigned char buf[12]; uint32_t t = (uint32_t)type; size_t n;
    if (type >= FT_GGUF_TYPE_COUNT || type == FT_GGUF_FLOAT32 || type == FT_GGUF_FLOAT64 || !ft__gguf_scalar_size[type])
        return ft_set_error(FT_ERR_INVALID, "gguf writer: %s is not an integer type", ft__gguf_type_name(type));
    n = ft__gguf_scalar_size[type];
    memcpy(buf, &t, 4);
    memcpy(buf + 4, &v, n);                       /* little-endian: the low bytes */
    return ft__gguf_wset(w, key, buf, 4 + n);
}
FT_API ft_result ft_gguf_set_float(ft_gguf_writer *w, const char *key, ft_gguf_type type, double v) {
    unsigned char buf[12]; uint32_t t = (uint32_t)type;
    memcpy(buf, &t, 4);
    if (type == FT_GGUF_FLOAT32) { float f = (float)v; memcpy(buf + 4, &f, 4); return ft__gguf_wset(w, key, buf, 8); }
    if (type == FT_GGUF_FLOAT64) { memcpy(buf + 4, &v, 8); return ft__gguf_wset(w, key, buf, 12); }
    return ft_set_error(FT_ERR_INVALID, "gguf writer: %s is not a float type", ft__gguf_type_name(type));
}
FT_API ft_result ft_gguf_set_str(ft_gguf_writer *w, const char *key, const char *s) {
    uint64_t n = strlen(s); uint32_t t = FT_GGUF_STRING; ft_result r;
    unsigned char *buf = FT__CAST(unsigned char *, FT_MALLOC((size_t)n + 12));
    if (!buf) return ft_set_error(FT_ERR_NOMEM, "gguf writer: out of memory");
    memcpy(buf, &t, 4); memcpy(buf + 4, &n, 8); memcpy(buf + 12, s, (size_t)n);
    r = ft__gguf_wset(w, key, buf, (size_t)n + 12);
    FT_FREE(buf);
    return r;
}
FT_API ft_result ft_gguf_set_array(ft_gguf_writer *w, const char *key, ft_gguf_type elem, const void *data, uint64_t n) {
    uint32_t t = FT_GGUF_ARRAY, e = (uint32_t)elem; size_t es, len; ft_result r; unsigned char *buf;
    if (elem >= FT_GGUF_TYPE_COUNT || !(es = ft__gguf_scalar_size[elem]))
        return ft_set_error(FT_ERR_INVALID, "gguf writer: arrays of %s need ft_gguf_set_str_array", ft__gguf_type_name(elem));
    len = 16 + (size_t)n * es;
    if (!(buf = FT__CAST(unsigned char *, FT_MALLOC(len)))) return ft_set_error(FT_ERR_NOMEM, "gguf writer: out of memory");
    memcpy(buf, &t, 4); memcpy(buf + 4, &e, 4); memcpy(buf + 8, &n, 8); memcpy(buf + 16, data, (size_t)n * es);
    r = ft__gguf_wset(w, key, buf, len);
    FT_FREE(buf);
    return r;
}
FT_API ft_result ft_gguf_set_str_array(ft_gguf_writer *w, const char *key, const ft_gguf_str *strs, uint64_t n) {
    uint32_t t = FT_GGUF_ARRAY, e = FT_GGUF_STRING; size_t len = 16, off; uint64_t i; ft_result r; unsigned char *buf;
    for (i = 0; i < n; i++) len += 8 + (size_t)strs[i].n;
    if (!(buf = FT__CAST(unsigned char *, FT_MALLOC(len)))) return ft_set_error(FT_ERR_NOMEM, "gguf writer: out of memory");
    memcpy(buf, &t, 4); memcpy(buf + 4, &e, 4); memcpy(buf + 8, &n, 8);
    for (off = 16, i = 0; i < n; i++) {
        memcpy(buf + off, &strs[i].n, 8); memcpy(buf + off + 8, strs[i].s, (size_t)strs[i].n);
        off += 8 + (size_t)strs[i].n;
    }
    r = ft__gguf_wset(w, key, buf, len);
    FT_FREE(buf);
    return r;
}
/* copy a key/value read from another file (any type, arrays included) */
FT_API ft_result ft_gguf_copy_kv(ft_gguf_writer *w, const ft_gguf_kv *kv) {
    char *key = ft__strndup(kv->key.s, (size_t)kv->key.n); ft_result r;
    if (!key) return ft_set_error(FT_ERR_NOMEM, "gguf writer: out of memory");
    if (kv->type == FT_GGUF_STRING) {
        char *s = ft__strndup(kv->strs[0].s, (size_t)kv->strs[0].n);
        r = s ? ft_gguf_set_str(w, key, s) : ft_set_error(FT_ERR_NOMEM, "gguf writer: out of memory");
        FT_FREE(s);
    } else if (kv->type == FT_GGUF_ARRAY && kv->arr_type == FT_GGUF_STRING) r = ft_gguf_set_str_array(w, key, kv->strs, kv->n);
    else if (kv->type == FT_GGUF_ARRAY && kv->arr_type == FT_GGUF_ARRAY) r = ft_set_error(FT_ERR_UNSUPPORTED, "gguf writer: nested array '%s'", key);
    else if (kv->type == FT_GGUF_ARRAY) r = ft_gguf_set_array(w, key, kv->arr_type, kv->data, kv->n);
    else {
        unsigned char buf[12]; uint32_t t = (uint32_t)kv->type;
        memcpy(buf, &t, 4); memcpy(buf + 4, kv->data, ft__gguf_scalar_size[kv->type]);
        r = ft__gguf_wset(w, key, buf, 4 + ft__gguf_scalar_size[kv->type]);
    }
    FT_FREE(key);
    return r;
}

/* ne in GGUF order (ne[0] innermost); data is referenced, not copied: keep it alive until
   ft_gguf_write */
FT_API ft_result ft_gguf_add_tensor(ft_gguf_writer *w, const char *name, ft_type type, int n_dims, const int64_t *ne, const void *data) {
    ft__gguf_wt *t; int64_t k, nel = 1;
    if (!ft__type(type) || n_dims < 1 || n_dims > 4 || ne[0] % ft__type(type)->block)
        return ft_set_error(FT_ERR_INVALID, "gguf writer: tensor '%s': bad type or shape", name);
    for (k = 0; k < w->n_t; k++)
        if (strcmp(w->t[k].name, name) == 0) return ft_set_error(FT_ERR_INVALID, "gguf writer: tensor '%s' added twice", name);
    if (w->n_t == w->cap_t) {
        int64_t nc = w->cap_t ? 2 * w->cap_t : 64;
        ft__gguf_wt *nt = FT__CAST(ft__gguf_wt *, FT_REALLOC(w->t, (size_t)nc * sizeof *nt));
        if (!nt) return ft_set_error(FT_ERR_NOMEM, "gguf writer: out of memory");
        w->t = nt; w->cap_t = nc;
    }
    t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    if (!(t->name = ft__strndup(name, strlen(name)))) return ft_set_error(FT_ERR_NOMEM, "gguf writer: out of memory");
    t->type = type; t->n_dims = n_dims; t->data = data;
    for (k = 0; k < 4; k++) { t->ne[k] = k < n_dims ? ne[k] : 1; nel *= t->ne[k]; }
    t->nbytes = ft_type_row_bytes(type, t->ne[0]) * (size_t)(nel / t->ne[0]);
    w->n_t++;
    return FT_OK;
}

/* magic, version, counts, the key/values, the tensor infos (offsets from the writer's sizes),
   padding to the alignment: returns the bytes written. The tensor data follows, each padded. */
static size_t ft__gguf_write_header(ft__afile *a_, const ft_gguf_writer *w) {
    static const unsigned char zeros[64] = {0};
    uint32_t u32; uint64_t u64, off = 0; int64_t i; int k; size_t pos = 0, al = w->alignment;
#define FT__PUT(p, n) do { ft__afile_write(a_, p, n); pos += (n); } while (0)
    u32 = 0x46554747u; FT__PUT(&u32, 4);
    u32 = 3; FT__PUT(&u32, 4);
    u64 = (uint64_t)w->n_t; FT__PUT(&u64, 8);
    u64 = (uint64_t)w->n_kv; FT__PUT(&u64, 8);
    for (i = 0; i < w->n_kv; i++) {
        u64 = strlen(w->kv[i].key); FT__PUT(&u64, 8); FT__PUT(w->kv[i].key, (size_t)u64);
        FT__PUT(w->kv[i].val, w->kv[i].len);
    }
    for (i = 0; i < w->n_t; i++) {
        ft__gguf_wt *t = &w->t[i];
        u64 = strlen(t->name); FT__PUT(&u64, 8); FT__PUT(t->name, (size_t)u64);
        u32 = (uint32_t)t->n_dims; FT__PUT(&u32, 4);
        for (k = 0; k < t->n_dims; k++) { u64 = (uint64_t)t->ne[k]; FT__PUT(&u64, 8); }
        u32 = (uint32_t)t->type; FT__PUT(&u32, 4);
        FT__PUT(&off, 8);
        off += (t->nbytes + al - 1) / al * al;
    }
    while (pos % al) FT__PUT(zeros, FT__MIN(al - pos % al, sizeof zeros));
#undef FT__PUT
    return pos;
}

/* g from the writer's keys and tensor infos (the header made in memory and parsed as a file's
   is), its tensors' data where the writer's point: no tensor is copied */
static ft_result ft__gguf_adopt(ft_gguf *g, const ft_gguf_writer *w) {
    ft__afile a; int64_t i; ft_result r;
    memset(&a, 0, sizeof a);
    a.in_mem = 1; a.fd = -1;
    ft__gguf_write_header(&a, w);
    if (a.failed) { FT_FREE(a.mem); return ft_set_error(FT_ERR_NOMEM, "%s: out of memory", g->path); }
    g->base = a.mem; g->size = a.mem_n; g->mapped = 0; g->external = 1;
    if ((r = ft__gguf_parse(g)) != FT_OK) return r;
    for (i = 0; i < g->n_t; i++) g->t[i].data = w->t[i].data;
    return FT_OK;
}

FT_API ft_result ft_gguf_write(ft_gguf_writer *w, const char *path) {
    ft__afile a; ft_result r; int64_t i;
    static const unsigned char zeros[64] = {0};
    size_t pos, al = w->alignment;
    if ((r = ft__afile_open(&a, path)) != FT_OK) return r;
    pos = ft__gguf_write_header(&a, w);
#define FT__PUT(p, n) do { ft__afile_write(&a, p, n); pos += (n); } while (0)
    for (i = 0; i < w->n_t; i++) {
        FT__PUT(w->t[i].data, w->t[i].nbytes);
        while (pos % al) FT__PUT(zeros, FT__MIN(al - pos % al, sizeof zeros));
    }
#undef FT__PUT
    return ft__afile_commit(&a);
}



/* ---- safetensors reader ------------------------------------------------------------------------- */
struct ft_safetensors {
    char *path; unsigned char *buf; size_t size, data_off;
    int mapped;                     /* buf is the file mapped read-only                         */
    ft_json_doc *hdr;
};
FT_API void ft_safetensors_close(ft_safetensors *s) {
    if (!s) return;
#if !defined(_WIN32)
    if (s->mapped) munmap(s->buf, s->size);
    else
#endif
    FT_FREE(s->buf);
    ft_json_free(s->hdr); FT_FREE(s->path); FT_FREE(s);
}
/* one tensor entry: a known dtype, a shape of whole numbers, integral data_offsets inside the data
   whose span is the shape's bytes */
static ft_result ft__safetensors_check(const ft_safetensors *s, const char *key, const ft_json *v) {
    const ft_json *dt = ft_json_get(v, "dtype"), *sh = ft_json_get(v, "shape"), *off = ft_json_get(v, "data_offsets");
    double nel = 1, es, a, b; int64_t j;
    if (!dt || dt->kind != FT_JSON_STRING || !sh || sh->kind != FT_JSON_ARRAY || sh->n > 8 || !off || off->kind != FT_JSON_ARRAY || off->n != 2 ||
        ft_json_at(off, 0)->kind != FT_JSON_NUMBER || ft_json_at(off, 1)->kind != FT_JSON_NUMBER)
        return ft_set_error(FT_ERR_FORMAT, "%s: tensor '%s': needs dtype, shape and data_offsets", s->path, key);
    es = strcmp(dt->s, "F32") == 0 || strcmp(dt->s, "I32") == 0 ? 4 : strcmp(dt->s, "F16") == 0 || strcmp(dt->s, "BF16") == 0 ? 2 :
         strcmp(dt->s, "F64") == 0 || strcmp(dt->s, "I64") == 0 ? 8 : strcmp(dt->s, "U8") == 0 || strcmp(dt->s, "I8") == 0 || strcmp(dt->s, "BOOL") == 0 ? 1 : 0;
    for (j = 0; j < sh->n; j++) {
        double d = ft_json_at(sh, j)->num;
        if (ft_json_at(sh, j)->kind != FT_JSON_NUMBER || d < 0 || d != floor(d) || d > 1e12) { es = -1; break; }
        nel *= d;
    }
    a = ft_json_at(off, 0)->num;
    b = ft_json_at(off, 1)->num;
    if (es <= 0 || a < 0 || a != floor(a) || b < a || b > (double)(s->size - s->data_off) || b - a != nel * es)
        return ft_set_error(FT_ERR_FORMAT, "%s: tensor '%s': dtype, shape and data_offsets [%.0f, %.0f] disagree or run past the %zu data bytes",
                            s->path, key, a, b, s->size - s->data_off);
    return FT_OK;
}
/* the header of s->buf (s->size bytes, read or copied in), every entry validated once */
static ft_result ft__safetensors_parse(ft_safetensors *s) {
    const char *path = s->path; uint64_t hn; int64_t i; ft_result r; const ft_json *root;
    if (s->size < 8) return ft_set_error(FT_ERR_FORMAT, "%s: offset 0: %zu bytes, too short for a header length", path, s->size);
    memcpy(&hn, s->buf, 8);
    if (hn > s->size - 8 || hn > ((uint64_t)100 << 20)) return ft_set_error(FT_ERR_FORMAT, "%s: offset 0: header length %llu exceeds the file", path, (unsigned long long)hn);
    s->data_off = 8 + (size_t)hn;
    if ((r = ft_json_parse(&s->hdr, FT__CAST(const char *, s->buf + 8), (size_t)hn, path, 1)) != FT_OK) return r;
    root = ft_json_root(s->hdr);
    if (root->kind != FT_JSON_OBJECT) return ft_set_error(FT_ERR_FORMAT, "%s: offset 8: the header is not a JSON object", path);
    for (i = 0; i < root->n; i++) {
        const ft_json *k = ft_json_key_at(root, i);
        if (strcmp(k->s, "__metadata__") != 0 && (r = ft__safetensors_check(s, k->s, ft_json_value_at(root, i))) != FT_OK) return r;
    }
    return FT_OK;
}
FT_API ft_result ft_safetensors_open_memory(ft_safetensors **out, const void *data, size_t size, const char *name) {
    ft_safetensors *s; ft_result r;
    *out = NULL;
    s = FT__CAST(ft_safetensors *, FT_MALLOC(sizeof *s));
    if (!s) return ft_set_error(FT_ERR_NOMEM, "%s: out of memory", name);
    memset(s, 0, sizeof *s);
    s->path = ft__strndup(name, strlen(name));
    s->size = size;
    s->buf = FT__CAST(unsigned char *, FT_MALLOC(size + 1));
    if (!s->path || !s->buf) { ft_safetensors_close(s); return ft_set_error(FT_ERR_NOMEM, "%s: out of memory", name); }
    if (size) memcpy(s->buf, data, size);
    if ((r = ft__safetensors_parse(s)) != FT_OK) { ft_safetensors_close(s); return r; }
    *out = s;
    return FT_OK;
}
FT_API ft_result ft_safetensors_open(ft_safetensors **out, const char *path) {
    ft_safetensors *s; FILE *f; long n; ft_result r;
    *out = NULL;
    if (!(f = fopen(path, "rb"))) return ft_set_error(FT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    s = FT__CAST(ft_safetensors *, FT_MALLOC(sizeof *s));
    if (!s) { fclose(f); return ft_set_error(FT_ERR_NOMEM, "%s: out of memory", path); }
    memset(s, 0, sizeof *s);
    s->path = ft__strndup(path, strlen(path));
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) n = -1;
    s->size = n < 0 ? 0 : (size_t)n;
#if !defined(_WIN32)
    if (n > 0 && s->path) {                      /* mapped: a model's weights are used in place */
        int fd = open(path, O_RDONLY);
        void *p = fd < 0 ? MAP_FAILED : mmap(NULL, s->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (fd >= 0) close(fd);
        if (p != MAP_FAILED) {
            fclose(f);
            s->buf = FT__CAST(unsigned char *, p); s->mapped = 1;
            if ((r = ft__safetensors_parse(s)) != FT_OK) { ft_safetensors_close(s); return r; }
            *out = s;
            return FT_OK;
        }
    }
#endif
    s->buf = FT__CAST(unsigned char *, FT_MALLOC(s->size + 1));
    if (n < 0 || !s->buf || !s->path || fread(s->buf, 1, s->size, f) != s->size) { fclose(f); ft_safetensors_close(s); return ft_set_error(FT_ERR_IO, "%s: read failed", path); }
    fclose(f);
    if ((r = ft__safetensors_parse(s)) != FT_OK) { ft_safetensors_close(s); return r; }
    *out = s;
    return FT_OK;
}
/* a tensor's dtype, shape and bytes (NULL if absent) */
FT_API const void *ft_safetensors_get(const ft_safetensors *s, const char *name, const char **dtype, int64_t *shape, int *ndim) {
    const ft_json *v = ft_json_get(ft_json_root(s->hdr), name), *sh; int64_t j;
    if (!v || strcmp(name, "__metadata__") == 0) return NULL;
    sh = ft_json_get(v, "shape");
    if (dtype) *dtype = ft_json_get(v, "dtype")->s;
    if (ndim) *ndim = (int)sh->n;
    if (shape) for (j = 0; j < sh->n; j++) shape[j] = (int64_t)ft_json_at(sh, j)->num;
    return s->buf + s->data_off + (size_t)ft_json_at(ft_json_get(v, "data_offsets"), 0)->num;
}
FT_API int64_t ft_safetensors_count(const ft_safetensors *s) { return ft_json_root(s->hdr)->n; }
FT_API const char *ft_safetensors_name(const ft_safetensors *s, int64_t i) {
    const ft_json *k = ft_json_key_at(ft_json_root(s->hdr), i);
    return k ? k->s : NULL;
}

/* ---- safetensors writer: f32 tensors, names in the given order ----------------------------------- */
typedef struct ft__st_entry { const char *name; const float *data; int ndim; int64_t shape[4]; } ft__st_entry;
static ft_result ft__safetensors_write(const char *path, const ft__st_entry *e, int n) {
    ft__afile a; ft_result r; char *hdr; size_t cap = 256, len = 0; uint64_t off = 0, hn; int i, k;
    for (i = 0; i < n; i++) cap += strlen(e[i].name) + 128;
    if (!(hdr = FT__CAST(char *, FT_MALLOC(cap)))) return ft_set_error(FT_ERR_NOMEM, "%s: out of memory", path);
    len += (size_t)snprintf(hdr + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (i = 0; i < n; i++) {
        uint64_t nel = 1;
        len += (size_t)snprintf(hdr + len, cap - len, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[", e[i].name);
        for (k = 0; k < e[i].ndim; k++) { len += (size_t)snprintf(hdr + len, cap - len, k ? ",%lld" : "%lld", (long long)e[i].shape[k]); nel *= (uint64_t)e[i].shape[k]; }
        len += (size_t)snprintf(hdr + len, cap - len, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off, (unsigned long long)(off + nel * 4));
        off += nel * 4;
    }
    len += (size_t)snprintf(hdr + len, cap - len, "}");
    while (len % 8) hdr[len++] = ' ';
    hn = len;
    if ((r = ft__afile_open(&a, path)) != FT_OK) { FT_FREE(hdr); return r; }
    ft__afile_write(&a, &hn, 8);
    ft__afile_write(&a, hdr, len);
    for (i = 0; i < n; i++) {
        uint64_t nel = 1;
        for (k = 0; k < e[i].ndim; k++) nel *= (uint64_t)e[i].shape[k];
        ft__afile_write(&a, e[i].data, (size_t)nel * 4);
    }
    FT_FREE(hdr);
    return ft__afile_commit(&a);
}

/* ============================================================================================
   [hf] Hugging Face model directories, read as the GGUF that llama.cpp's converter
   (convert_hf_to_gguf.py) makes of them, so everything that takes a model path takes either:
     config.json                      -> general.architecture and the <arch>.* keys
     model.safetensors, or the shards
     of model.safetensors.index.json  -> the tensors under GGUF names (blk.N.attn_q.weight, ...)
     tokenizer.json (+ tokenizer_config.json, chat_template.jinja, generation_config.json)
                                      -> the tokenizer.ggml.* keys, the chat template, stop ids
   F32, F16 and BF16 weights stay in the mapped files. What the converter changes is changed the
   same way, in copies: llama's Q/K rows permuted to adjacent RoPE pairs (in their own type),
   gemma3's RMSNorm weights stored as 1 + w (f32), each layer's experts stacked into one tensor
   (in their own type), llama3's frequency factors and phi3's LongRoPE factors made from the
   config. The result is an ordinary ft_gguf whose tensors point into the mappings (it keeps
   them and the copies until ft_gguf_close).
   ============================================================================================ */
/* GGUF's token types (tokenizer.ggml.token_type) */
enum { FT__TT_NORMAL = 1, FT__TT_UNKNOWN = 2, FT__TT_CONTROL = 3, FT__TT_USER = 4,
       FT__TT_UNUSED = 5, FT__TT_BYTE = 6 };
#define FT__HF_TRY(x) do { ft_result r_ = (x); if (r_ != FT_OK) return r_; } while (0)
typedef struct ft__hf_arch {
    const char *cls, *arch;         /* config.json's architectures[0]; general.architecture    */
    unsigned char permute_qk;       /* the converter permutes q/k rows (adjacent-pair RoPE)     */
    unsigned char gemma;            /* norms stored as 1 + w; sandwich norms; per-type RoPE      */
} ft__hf_arch;
static const ft__hf_arch ft__hf_archs[] = {
    {"LlamaForCausalLM", "llama", 1, 0},     {"MistralForCausalLM", "llama", 1, 0},
    {"MixtralForCausalLM", "llama", 1, 0},   {"Qwen2ForCausalLM", "qwen2", 0, 0},
    {"Qwen3ForCausalLM", "qwen3", 0, 0},     {"Gemma3ForCausalLM", "gemma3", 0, 1},
    {"Phi3ForCausalLM", "phi3", 0, 0},       {"Qwen3MoeForCausalLM", "qwen3moe", 0, 0},
    {"OlmoeForCausalLM", "olmoe", 0, 0},
};
/* a layer's tensor: Hugging Face's name after "model.layers.N." -> GGUF's after "blk.N.";
   only: 0 every architecture, 1 gemma only, 2 all but gemma */
static const struct { const char *hf, *gguf; int only; } ft__hf_layer_names[] = {
    {"input_layernorm.weight", "attn_norm.weight", 0},
    {"self_attn.q_proj.weight", "attn_q.weight", 0},            {"self_attn.q_proj.bias", "attn_q.bias", 0},
    {"self_attn.k_proj.weight", "attn_k.weight", 0},            {"self_attn.k_proj.bias", "attn_k.bias", 0},
    {"self_attn.v_proj.weight", "attn_v.weight", 0},            {"self_attn.v_proj.bias", "attn_v.bias", 0},
    {"self_attn.o_proj.weight", "attn_output.weight", 0},       {"self_attn.qkv_proj.weight", "attn_qkv.weight", 0},
    {"self_attn.q_norm.weight", "attn_q_norm.weight", 0},       {"self_attn.k_norm.weight", "attn_k_norm.weight", 0},
    {"post_attention_layernorm.weight", "ffn_norm.weight", 2},  {"post_attention_layernorm.weight", "post_attention_norm.weight", 1},
    {"pre_feedforward_layernorm.weight", "ffn_norm.weight", 1}, {"post_feedforward_layernorm.weight", "post_ffw_norm.weight", 1},
    {"mlp.gate_proj.weight", "ffn_gate.weight", 0},             {"mlp.up_proj.weight", "ffn_up.weight", 0},
    {"mlp.down_proj.weight", "ffn_down.weight", 0},             {"mlp.gate_up_proj.weight", "ffn_up.weight", 0},
    {"mlp.gate.weight", "ffn_gate_inp.weight", 0},              {"block_sparse_moe.gate.weight", "ffn_gate_inp.weight", 0},
};
/* an expert's tensor: "<prefix>.<e>.<part>.weight" -> slot k of ffn_{gate,up,down}_exps */
static const struct { const char *prefix, *part; int k; } ft__hf_expert_names[] = {
    {"mlp.experts", "gate_proj", 0}, {"mlp.experts", "up_proj", 1}, {"mlp.experts", "down_proj", 2},
    {"block_sparse_moe.experts", "w1", 0}, {"block_sparse_moe.experts", "w3", 1}, {"block_sparse_moe.experts", "w2", 2},
};

typedef struct ft__hf {
    const char *dir;
    ft_json_doc *cfg_doc, *tok_doc, *tcfg_doc, *gen_doc;
    const ft_json *cfg, *rope;      /* config.json; its RoPE parameters (rope_parameters / rope_scaling) */
    const ft__hf_arch *a;
    ft_gguf_writer *w;
    ft_gguf *g;                     /* holds the mappings and copies (ft__gguf_keep)           */
    int64_t n_layer, n_head, n_head_kv, head_dim, n_expert;
    const void **experts;           /* (n_layer, 3, n_expert) pointers to each expert's weight  */
    int64_t exp_shape[3][2]; ft_type exp_type[3];
    char key[160];
} ft__hf;

/* a JSON file of the directory: FT_OK with *doc NULL when it is absent and not required */
static ft_result ft__json_file(const char *path, ft_json_doc **doc, int required) {
    unsigned char *text = NULL; size_t n = 0; FILE *f; long sz; ft_result r;
    *doc = NULL;
    if (!(f = fopen(path, "rb"))) return required || errno != ENOENT ? ft_set_error(FT_ERR_IO, "%s: cannot open: %s", path, strerror(errno)) : FT_OK;
    if (fseek(f, 0, SEEK_END) == 0 && (sz = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 && (text = FT__CAST(unsigned char *, FT_MALLOC((size_t)sz + 1))) != NULL)
        n = fread(text, 1, (size_t)sz, f);
    fclose(f);
    if (!text) return ft_set_error(FT_ERR_IO, "%s: read failed", path);
    r = ft_json_parse(doc, FT__CAST(const char *, text), n, path, 1);
    FT_FREE(text);
    if (r == FT_OK && ft_json_root(*doc)->kind != FT_JSON_OBJECT) { ft_json_free(*doc); *doc = NULL; r = ft_set_error(FT_ERR_FORMAT, "%s: not a JSON object", path); }
    return r;
}
static const ft_json *ft__json_value(const ft_json *obj, const char *key) {   /* absent or null: NULL */
    const ft_json *v = obj ? ft_json_get(obj, key) : NULL;
    return v && v->kind != FT_JSON_NULL ? v : NULL;
}
/* a number of obj (file `file`) in [lo, hi], whole if `whole`: *out; absent: def, or an error
   when required */
static ft_result ft__hf_num(const ft__hf *h, const ft_json *obj, const char *file, const char *key, double lo, double hi, int whole, int required, double def, double *out) {
    const ft_json *v = ft__json_value(obj, key);
    *out = def;
    if (!v) return required ? ft_set_error(FT_ERR_FORMAT, "%s/%s: \"%s\" is missing", h->dir, file, key) : FT_OK;
    if (v->kind != FT_JSON_NUMBER || !(v->num >= lo && v->num <= hi) || (whole && v->num != floor(v->num)))
        return ft_set_error(FT_ERR_FORMAT, "%s/%s: \"%s\" must be a%s number in [%g, %g]", h->dir, file, key, whole ? " whole" : "", lo, hi);
    *out = v->num;
    return FT_OK;
}
static ft_result ft__hf_key(ft__hf *h, const char *suffix, ft_gguf_type type, double v) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", h->a->arch, suffix);
    return type == FT_GGUF_FLOAT32 ? ft_gguf_set_float(h->w, key, type, v) : ft_gguf_set_int(h->w, key, type, (int64_t)v);
}
/* config.json's number `ck` (whole, in [lo, hi]) as <arch>.<suffix>: required, or skipped when absent */
static ft_result ft__hf_cfg_int(ft__hf *h, const char *ck, const char *suffix, double lo, double hi, int required, int64_t *out) {
    double v; ft_result r = ft__hf_num(h, h->cfg, "config.json", ck, lo, hi, 1, required, -1, &v);
    if (out) *out = (int64_t)v;
    if (r != FT_OK || v < 0 || !suffix) return r;
    return ft__hf_key(h, suffix, FT_GGUF_UINT32, v);
}
/* f32 storage that the GGUF keeps until it is closed */
static float *ft__hf_floats(ft__hf *h, int64_t n) {
    float *p = FT__CAST(float *, ft__gguf_keep(h->g, (size_t)n * sizeof(float), NULL));
    if (!p) ft_set_error(FT_ERR_NOMEM, "%s: out of memory", h->dir);
    return p;
}
/* llama3's frequency factors as the converter computes them (rope_freqs.weight, n_rot / 2) */
static ft_result ft__hf_llama3_freqs(ft__hf *h, double base, int64_t n_rot) {
    double factor, lo, hi, orig; int64_t i, ne = n_rot / 2; float *f;
    FT__HF_TRY(ft__hf_num(h, h->rope, "config.json", "factor", 1, 1e6, 0, 0, 8.0, &factor));
    FT__HF_TRY(ft__hf_num(h, h->rope, "config.json", "low_freq_factor", 1e-6, 1e6, 0, 0, 1.0, &lo));
    FT__HF_TRY(ft__hf_num(h, h->rope, "config.json", "high_freq_factor", 1e-6, 1e6, 0, 0, 4.0, &hi));
    FT__HF_TRY(ft__hf_num(h, h->rope, "config.json", "original_max_position_embeddings", 1, 1e9, 1, 0, 8192, &orig));
    if (!(hi > lo)) return ft_set_error(FT_ERR_FORMAT, "%s/config.json: llama3 RoPE needs high_freq_factor > low_freq_factor", h->dir);
    if (!(f = ft__hf_floats(h, ne))) return FT_ERR_NOMEM;
    for (i = 0; i < ne; i++) {
        float freq = (float)(1.0 / pow(base, (double)(2 * i) / (double)n_rot));
        double wavelen = 2.0 * 3.14159265358979323846 / freq;
        if (wavelen < orig / hi) f[i] = 1.0f;
        else if (wavelen > orig / lo) f[i] = (float)factor;
        else {
            double smooth = (orig / wavelen - lo) / (hi - lo);
            f[i] = (float)(1.0 / ((1.0 - smooth) / factor + smooth));
        }
    }
    return ft_gguf_add_tensor(h->w, "rope_freqs.weight", FT_TYPE_F32, 1, &ne, f);
}
/* phi3's LongRoPE: short and long factors (tensors), the original context and the attention factor */
static ft_result ft__hf_longrope(ft__hf *h, int64_t n_rot) {
    static const char *const key[2] = {"short_factor", "long_factor"}, *const name[2] = {"rope_factors_short.weight", "rope_factors_long.weight"};
    double orig, ctx, af; int64_t ne = n_rot / 2, i; int k;
    FT__HF_TRY(ft__hf_num(h, h->rope, "config.json", "original_max_position_embeddings", 1, 1e9, 1, 0, 0, &orig));
    if (orig <= 0) FT__HF_TRY(ft__hf_num(h, h->cfg, "config.json", "original_max_position_embeddings", 1, 1e9, 1, 1, 0, &orig));
    FT__HF_TRY(ft__hf_num(h, h->cfg, "config.json", "max_position_embeddings", 1, 1e9, 1, 1, 0, &ctx));
    for (k = 0; k < 2; k++) {
        const ft_json *a = ft__json_value(h->rope, key[k]); float *f;
        if (!a || a->kind != FT_JSON_ARRAY || a->n != ne) return ft_set_error(FT_ERR_FORMAT, "%s/config.json: LongRoPE's \"%s\" must be %lld numbers", h->dir, key[k], (long long)ne);
        if (!(f = ft__hf_floats(h, ne))) return FT_ERR_NOMEM;
        for (i = 0; i < ne; i++) {
            if (ft_json_at(a, i)->kind != FT_JSON_NUMBER) return ft_set_error(FT_ERR_FORMAT, "%s/config.json: \"%s\"[%lld] is not a number", h->dir, key[k], (long long)i);
            f[i] = (float)ft_json_at(a, i)->num;
        }
        FT__HF_TRY(ft_gguf_add_tensor(h->w, name[k], FT_TYPE_F32, 1, &ne, f));
    }
    af = ctx > orig ? sqrt(1.0 + log(ctx / orig) / log(orig)) : 1.0;
    FT__HF_TRY(ft__hf_num(h, h->rope, "config.json", "attention_factor", 1e-6, 1e6, 0, 0, af, &af));
    FT__HF_TRY(ft__hf_key(h, "rope.scaling.attn_factor", FT_GGUF_FLOAT32, af));
    return ft__hf_key(h, "rope.scaling.original_context_length", FT_GGUF_UINT32, orig);
}
/* RoPE: base, rotated dims, scaling (none, linear, yarn, llama3, longrope) */
static ft_result ft__hf_rope(ft__hf *h) {
    const ft_json *t; double base, prf, factor, orig; int64_t n_rot; char type[32] = "default";
    h->rope = ft__json_value(h->cfg, "rope_parameters");
    if (!h->rope) h->rope = ft__json_value(h->cfg, "rope_scaling");
    if (h->a->gemma && h->rope && ft__json_value(h->rope, "full_attention")) {     /* per layer type */
        double swa;
        FT__HF_TRY(ft__hf_num(h, ft__json_value(h->rope, "sliding_attention"), "config.json", "rope_theta", 1e-6, 1e12, 0, 0, 10000.0, &swa));
        FT__HF_TRY(ft__hf_key(h, "rope.freq_base_swa", FT_GGUF_FLOAT32, swa));
        h->rope = ft__json_value(h->rope, "full_attention");
    } else if (h->a->gemma) {
        double swa;
        FT__HF_TRY(ft__hf_num(h, h->cfg, "config.json", "rope_local_base_freq", 1e-6, 1e12, 0, 0, 10000.0, &swa));
        FT__HF_TRY(ft__hf_key(h, "rope.freq_base_swa", FT_GGUF_FLOAT32, swa));
    }
    if (h->rope && h->rope->kind != FT_JSON_OBJECT) return ft_set_error(FT_ERR_FORMAT, "%s/config.json: \"rope_parameters\" / \"rope_scaling\" is not an object", h->dir);
    FT__HF_TRY(ft__hf_num(h, h->rope, "config.json", "rope_theta", 1e-6, 1e12, 0, 0, 0, &base));
    if (base <= 0) FT__HF_TRY(ft__hf_num(h, h->cfg, "config.json", "rope_theta", 1e-6, 1e12, 0, 0, 10000.0, &base));
    FT__HF_TRY(ft__hf_key(h, "rope.freq_base", FT_GGUF_FLOAT32, base));
    FT__HF_TRY(ft__hf_num(h, h->rope, "config.json", "partial_rotary_factor", 1e-6, 1, 0, 0, 0, &prf));
    if (prf <= 0) FT__HF_TRY(ft__hf_num(h, h->cfg, "config.json", "partial_rotary_factor", 1e-6, 1, 0, 0, 1.0, &prf));
    n_rot = (int64_t)((double)h->head_dim * prf);
    if (n_rot != h->head_dim) FT__HF_TRY(ft__hf_key(h, "rope.dimension_count", FT_GGUF_UINT32, (double)n_rot));
    if ((t = ft__json_value(h->rope, "rope_type")) || (t = ft__json_value(h->rope, "type"))) {
        if (t->kind != FT_JSON_STRING) return ft_set_error(FT_ERR_FORMAT, "%s/config.json: \"rope_type\" is not a string", h->dir);
        snprintf(type, sizeof type, "%s", t->s);
    }
    if (!strcmp(type, "default")) return FT_OK;
    if (!strcmp(type, "llama3")) return ft__hf_llama3_freqs(h, base, n_rot);
    if (!strcmp(type, "longrope") || !strcmp(type, "su")) return ft__hf_longrope(h, n_rot);
    if (strcmp(type, "linear") && strcmp(type, "yarn"))
        return ft_set_error(FT_ERR_UNSUPPORTED, "%s/config.json: rope_type \"%s\" is not supported (default, linear, yarn, llama3, longrope are)", h->dir, type);
    FT__HF_TRY(ft__hf_num(h, h->rope, "config.json", "factor", 1, 1e6, 0, 1, 1, &factor));
    snprintf(h->key, sizeof h->key, "%s.rope.scaling.type", h->a->arch);
    FT__HF_TRY(ft_gguf_set_str(h->w, h->key, type));
    FT__HF_TRY(ft__hf_key(h, "rope.scaling.factor", FT_GGUF_FLOAT32, factor));
    if (!strcmp(type, "linear")) return FT_OK;
    FT__HF_TRY(ft__hf_num(h, h->rope, "config.json", "original_max_position_embeddings", 1, 1e9, 1, 0, 0, &orig));
    if (orig <= 0) FT__HF_TRY(ft__hf_num(h, h->cfg, "config.json", "original_max_position_embeddings", 1, 1e9, 1, 1, 0, &orig));
    return ft__hf_key(h, "rope.scaling.original_context_length", FT_GGUF_UINT32, orig);
}
/* gemma3's sliding window: the window and which layers slide (layer_types, or a pattern) */
static ft_result ft__hf_swa(ft__hf *h) {
    const ft_json *lt = ft__json_value(h->cfg, "layer_types"); int64_t l, win; double pat;
    FT__HF_TRY(ft__hf_cfg_int(h, "sliding_window", "attention.sliding_window", 0, 1e9, 0, &win));
    if (win <= 0) return FT_OK;
    snprintf(h->key, sizeof h->key, "%s.attention.sliding_window_pattern", h->a->arch);
    if (lt) {
        unsigned char *flags = FT__CAST(unsigned char *, FT_MALLOC((size_t)h->n_layer)); ft_result r;
        if (lt->kind != FT_JSON_ARRAY || lt->n != h->n_layer) { FT_FREE(flags); return ft_set_error(FT_ERR_FORMAT, "%s/config.json: \"layer_types\" must list %lld layers", h->dir, (long long)h->n_layer); }
        if (!flags) return ft_set_error(FT_ERR_NOMEM, "%s: out of memory", h->dir);
        for (l = 0; l < h->n_layer; l++) flags[l] = ft_json_at(lt, l)->kind == FT_JSON_STRING && !strcmp(ft_json_at(lt, l)->s, "sliding_attention");
        r = ft_gguf_set_array(h->w, h->key, FT_GGUF_BOOL, flags, (uint64_t)h->n_layer);
        FT_FREE(flags);
        return r;
    }
    FT__HF_TRY(ft__hf_num(h, h->cfg, "config.json", "sliding_window_pattern", 1, 1e6, 1, 0, 0, &pat));
    if (pat <= 0) FT__HF_TRY(ft__hf_num(h, h->cfg, "config.json", "_sliding_window_pattern", 1, 1e6, 1, 0, 6, &pat));
    return ft_gguf_set_int(h->w, h->key, FT_GGUF_UINT32, (int64_t)pat);
}
/* the architecture and its sizes */
static ft_result ft__hf_config(ft__hf *h) {
    const ft_json *arr = ft__json_value(h->cfg, "architectures"); const char *cls = NULL, *base; size_t i;
    int64_t C, v; double eps, cap;
    if (arr && arr->kind == FT_JSON_ARRAY && arr->n > 0 && ft_json_at(arr, 0)->kind == FT_JSON_STRING) cls = ft_json_at(arr, 0)->s;
    for (i = 0; cls && i < sizeof ft__hf_archs / sizeof ft__hf_archs[0]; i++) if (!strcmp(cls, ft__hf_archs[i].cls)) h->a = &ft__hf_archs[i];
    if (!h->a) return ft_set_error(FT_ERR_UNSUPPORTED, "%s/config.json: \"architectures\" [\"%s\"] is not supported (Llama, Mistral, Mixtral, Qwen2, Qwen3, Gemma3, Phi3, Qwen3Moe, Olmoe ...ForCausalLM are)", h->dir, cls ? cls : "?");
    base = strrchr(h->dir, '/');
    FT__HF_TRY(ft_gguf_set_str(h->w, "general.architecture", h->a->arch));
    FT__HF_TRY(ft_gguf_set_str(h->w, "general.name", base && base[1] ? base + 1 : h->dir));
    FT__HF_TRY(ft__hf_cfg_int(h, "num_hidden_layers", "block_count", 1, 65536, 1, &h->n_layer));
    FT__HF_TRY(ft__hf_cfg_int(h, "hidden_size", "embedding_length", 1, 1 << 20, 1, &C));
    FT__HF_TRY(ft__hf_cfg_int(h, "intermediate_size", "feed_forward_length", 1, 1 << 24, 1, NULL));
    FT__HF_TRY(ft__hf_cfg_int(h, "num_attention_heads", "attention.head_count", 1, 65536, 1, &h->n_head));
    FT__HF_TRY(ft__hf_cfg_int(h, "num_key_value_heads", "attention.head_count_kv", 1, 65536, 0, &h->n_head_kv));
    FT__HF_TRY(ft__hf_cfg_int(h, "head_dim", NULL, 1, 65536, 0, &h->head_dim));
    if (h->n_head_kv < 0) h->n_head_kv = h->n_head;
    if (h->head_dim < 0) h->head_dim = C / h->n_head;
    FT__HF_TRY(ft__hf_key(h, "attention.key_length", FT_GGUF_UINT32, (double)h->head_dim));
    FT__HF_TRY(ft__hf_key(h, "attention.value_length", FT_GGUF_UINT32, (double)h->head_dim));
    FT__HF_TRY(ft__hf_cfg_int(h, "max_position_embeddings", "context_length", 1, 1e9, 0, NULL));
    FT__HF_TRY(ft__hf_cfg_int(h, "vocab_size", "vocab_size", 1, 1 << 30, 0, NULL));
    FT__HF_TRY(ft__hf_num(h, h->cfg, "config.json", "rms_norm_eps", 0, 1, 0, 0, 1e-6, &eps));
    FT__HF_TRY(ft__hf_key(h, "attention.layer_norm_rms_epsilon", FT_GGUF_FLOAT32, eps));
    FT__HF_TRY(ft__hf_cfg_int(h, "num_local_experts", "expert_count", 1, 4096, 0, &h->n_expert));
    if (h->n_expert < 0) FT__HF_TRY(ft__hf_cfg_int(h, "num_experts", "expert_count", 1, 4096, 0, &h->n_expert));
    if (h->n_expert > 0) FT__HF_TRY(ft__hf_cfg_int(h, "num_experts_per_tok", "expert_used_count", 1, 4096, 1, NULL));
    FT__HF_TRY(ft__hf_cfg_int(h, "moe_intermediate_size", "expert_feed_forward_length", 1, 1 << 24, 0, &v));
    FT__HF_TRY(ft__hf_num(h, h->cfg, "config.json", "final_logit_softcapping", 1e-6, 1e6, 0, 0, 0, &cap));
    if (cap > 0) FT__HF_TRY(ft__hf_key(h, "final_logit_softcapping", FT_GGUF_FLOAT32, cap));
    if (h->a->gemma) FT__HF_TRY(ft__hf_swa(h));
    return ft__hf_rope(h);
}

/* ---- the tensors ---------------------------------------------------------------------------------- */
/* rows (n_head * D) of row_bytes each: to_hf = 1: HF[h*D + j] = G[h*D + 2j], HF[h*D + D/2 + j] =
   G[h*D + 2j + 1] (the converter's permute undone); to_hf = 0: the converter's permute */
static void ft__permute_row_bytes(void *dst, const void *src, int64_t n_head, int64_t D, size_t row_bytes, int to_hf) {
    int64_t h, j; int s;
    for (h = 0; h < n_head; h++)
        for (j = 0; j < D / 2; j++)
            for (s = 0; s < 2; s++) {
                int64_t g = h * D + 2 * j + s, hf = h * D + s * (D / 2) + j;
                memcpy(FT__CAST(char *, dst) + (size_t)(to_hf ? hf : g) * row_bytes,
                       FT__CAST(const char *, src) + (size_t)(to_hf ? g : hf) * row_bytes, row_bytes);
            }
}
static int ft__hf_dtype(const char *dt) {
    return !strcmp(dt, "F32") ? FT_TYPE_F32 : !strcmp(dt, "F16") ? FT_TYPE_F16 : !strcmp(dt, "BF16") ? FT_TYPE_BF16 : -1;
}
/* layer tensor `rest` of layer l: an expert's weight (kept for stacking: *gname empty) or a
   name from the table */
static ft_result ft__hf_layer_name(ft__hf *h, const char *file, const char *name, const char *rest, int64_t l,
                                   const void *data, ft_type type, const int64_t *shape, char *gname) {
    size_t i, pl; long long e; int n;
    for (i = 0; i < sizeof ft__hf_expert_names / sizeof ft__hf_expert_names[0]; i++) {
        pl = strlen(ft__hf_expert_names[i].prefix);
        if (strncmp(rest, ft__hf_expert_names[i].prefix, pl) || rest[pl] != '.' || sscanf(rest + pl + 1, "%lld.%n", &e, &n) != 1) continue;
        if (strncmp(rest + pl + 1 + n, ft__hf_expert_names[i].part, strlen(ft__hf_expert_names[i].part)) ||
            strcmp(rest + pl + 1 + n + strlen(ft__hf_expert_names[i].part), ".weight")) continue;
        {
            int k = ft__hf_expert_names[i].k;
            if (e < 0 || e >= h->n_expert) return ft_set_error(FT_ERR_FORMAT, "%s: tensor '%s': expert %lld of %lld (num_local_experts / num_experts in config.json)", file, name, e, (long long)h->n_expert);
            if (h->experts[(l * 3 + k) * h->n_expert + e]) return ft_set_error(FT_ERR_FORMAT, "%s: tensor '%s' appears twice", file, name);
            if (h->exp_type[k] == (ft_type)-1) { h->exp_type[k] = type; h->exp_shape[k][0] = shape[0]; h->exp_shape[k][1] = shape[1]; }
            if (type != h->exp_type[k] || shape[0] != h->exp_shape[k][0] || shape[1] != h->exp_shape[k][1])
                return ft_set_error(FT_ERR_SHAPE, "%s: tensor '%s': experts of one kind must share a shape and a dtype", file, name);
            h->experts[(l * 3 + k) * h->n_expert + e] = data;
            gname[0] = 0;
            return FT_OK;
        }
    }
    for (i = 0; i < sizeof ft__hf_layer_names / sizeof ft__hf_layer_names[0]; i++)
        if (!strcmp(rest, ft__hf_layer_names[i].hf) && ft__hf_layer_names[i].only != (h->a->gemma ? 2 : 1)) {
            snprintf(gname, 128, "blk.%lld.%s", (long long)l, ft__hf_layer_names[i].gguf);
            return FT_OK;
        }
    return ft_set_error(FT_ERR_UNSUPPORTED, "%s: tensor '%s' is not one finetune.h reads for %s", file, name, h->a->cls);
}
/* the converter's changes, in copies: q/k rows permuted (llama), norms + 1 (gemma) */
static ft_result ft__hf_transform(ft__hf *h, const char *file, const char *gname, const void **data, ft_type *type, int nd, const int64_t *ne) {
    size_t len = strlen(gname); int q = strstr(gname, ".attn_q.") != NULL, k = strstr(gname, ".attn_k.") != NULL;
    if (h->a->permute_qk && (q || k)) {
        int64_t heads = q ? h->n_head : h->n_head_kv, rows = nd == 2 ? ne[1] : ne[0];
        size_t row_bytes = nd == 2 ? ft_type_row_bytes(*type, ne[0]) : ft_type_row_bytes(*type, 1);
        void *p;
        if (rows != heads * h->head_dim || h->head_dim % 2) return ft_set_error(FT_ERR_SHAPE, "%s: %s has %lld rows, not %lld heads x %lld", file, gname, (long long)rows, (long long)heads, (long long)h->head_dim);
        if (!(p = ft__gguf_keep(h->g, (size_t)rows * row_bytes, NULL))) return ft_set_error(FT_ERR_NOMEM, "%s: out of memory", h->dir);
        ft__permute_row_bytes(p, *data, heads, h->head_dim, row_bytes, 0);
        *data = p;
    }
    if (h->a->gemma && len > 11 && !strcmp(gname + len - 11, "norm.weight")) {
        float *f; int64_t i;
        if (nd != 1 || !(f = ft__hf_floats(h, ne[0]))) return nd != 1 ? ft_set_error(FT_ERR_SHAPE, "%s: %s is not a vector", file, gname) : FT_ERR_NOMEM;
        ft__type(*type)->to_f32(*data, f, ne[0]);
        for (i = 0; i < ne[0]; i++) f[i] += 1.0f;
        *data = f; *type = FT_TYPE_F32;
    }
    return FT_OK;
}
/* one tensor of a safetensors file, under its GGUF name */
static ft_result ft__hf_tensor(ft__hf *h, const ft_safetensors *st, const char *file, const char *name, int tied) {
    const char *dt; int64_t shape[8], ne[4] = {1, 1, 1, 1}; int nd = 0, k, type; long long l; int n = 0;
    char gname[128]; const void *data = ft_safetensors_get(st, name, &dt, shape, &nd);
    ft_type ty;
    if (strstr(name, "rotary_emb.")) return FT_OK;                 /* buffers, not weights        */
    if ((type = ft__hf_dtype(dt)) < 0) return ft_set_error(FT_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s (F32, F16, BF16 are read)", file, name, dt);
    if (nd < 1 || nd > 2) return ft_set_error(FT_ERR_SHAPE, "%s: tensor '%s' has %d dimensions (1 or 2 expected)", file, name, nd);
    ty = (ft_type)type;
    for (k = 0; k < nd; k++) ne[k] = shape[nd - 1 - k];
    if (!strcmp(name, "model.embed_tokens.weight")) snprintf(gname, sizeof gname, "token_embd.weight");
    else if (!strcmp(name, "model.norm.weight")) snprintf(gname, sizeof gname, "output_norm.weight");
    else if (!strcmp(name, "lm_head.weight")) { if (tied) return FT_OK; snprintf(gname, sizeof gname, "output.weight"); }
    else if (sscanf(name, "model.layers.%lld.%n", &l, &n) == 1 && n > 0) {
        if (l < 0 || l >= h->n_layer) return ft_set_error(FT_ERR_FORMAT, "%s: tensor '%s' is for layer %lld of %lld", file, name, l, (long long)h->n_layer);
        FT__HF_TRY(ft__hf_layer_name(h, file, name, name + n, l, data, ty, shape, gname));
        if (!gname[0]) return FT_OK;                               /* an expert: stacked later    */
    } else return ft_set_error(FT_ERR_UNSUPPORTED, "%s: tensor '%s' is not one finetune.h reads for %s", file, name, h->a->cls);
    FT__HF_TRY(ft__hf_transform(h, file, gname, &data, &ty, nd, ne));
    return ft_gguf_add_tensor(h->w, gname, ty, nd, ne, data);
}
/* each layer's experts stacked into blk.N.ffn_{gate,up,down}_exps [cols, rows, E] (copies) */
static ft_result ft__hf_stack_experts(ft__hf *h) {
    static const char *const nm[3] = {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"};
    int64_t l, e, E = h->n_expert; int k;
    for (l = 0; E > 0 && l < h->n_layer; l++)
        for (k = 0; k < 3; k++) {
            int64_t ne[3]; size_t bytes; char *p; char name[96];
            int any = 0;
            for (e = 0; e < E; e++) any |= h->experts[(l * 3 + k) * E + e] != NULL;
            if (!any) continue;                                   /* a dense layer              */
            for (e = 0; e < E; e++)
                if (!h->experts[(l * 3 + k) * E + e]) return ft_set_error(FT_ERR_FORMAT, "%s: layer %lld has no %s weight for expert %lld", h->dir, (long long)l, nm[k], (long long)e);
            ne[0] = h->exp_shape[k][1]; ne[1] = h->exp_shape[k][0]; ne[2] = E;
            bytes = ft_type_row_bytes(h->exp_type[k], ne[0]) * (size_t)ne[1];
            if (!(p = FT__CAST(char *, ft__gguf_keep(h->g, bytes * (size_t)E, NULL)))) return ft_set_error(FT_ERR_NOMEM, "%s: out of memory", h->dir);
            for (e = 0; e < E; e++) memcpy(p + (size_t)e * bytes, h->experts[(l * 3 + k) * E + e], bytes);
            snprintf(name, sizeof name, "blk.%lld.%s.weight", (long long)l, nm[k]);
            FT__HF_TRY(ft_gguf_add_tensor(h->w, name, h->exp_type[k], 3, ne, p));
        }
    return FT_OK;
}
/* model.safetensors, or every shard named by model.safetensors.index.json's weight_map */
static ft_result ft__hf_weights(ft__hf *h) {
    char path[1200]; ft_json_doc *idx = NULL; const ft_json *wm = NULL; int64_t i, j, n_files = 1; ft_result r = FT_OK;
    const ft_json *tie = ft__json_value(h->cfg, "tie_word_embeddings");
    int tied = tie ? tie->kind == FT_JSON_BOOL && tie->num != 0 : h->a->gemma;
    if (h->n_expert > 0) {
        h->experts = FT__CAST(const void **, FT_MALLOC((size_t)(h->n_layer * 3 * h->n_expert) * sizeof(void *)));
        if (!h->experts) return ft_set_error(FT_ERR_NOMEM, "%s: out of memory", h->dir);
        memset(h->experts, 0, (size_t)(h->n_layer * 3 * h->n_expert) * sizeof(void *));
    }
    h->exp_type[0] = h->exp_type[1] = h->exp_type[2] = (ft_type)-1;
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", h->dir);
    FT__HF_TRY(ft__json_file(path, &idx, 0));
    if (idx) {
        wm = ft__json_value(ft_json_root(idx), "weight_map");
        if (!wm || wm->kind != FT_JSON_OBJECT || wm->n < 1) { ft_json_free(idx); return ft_set_error(FT_ERR_FORMAT, "%s: \"weight_map\" is missing or empty", path); }
        n_files = wm->n;
    }
    for (i = 0; i < n_files && r == FT_OK; i++) {
        ft_safetensors *st; const ft_json *f = wm ? ft_json_value_at(wm, i) : NULL; int seen = 0;
        if (wm && f->kind != FT_JSON_STRING) { r = ft_set_error(FT_ERR_FORMAT, "%s/model.safetensors.index.json: weight_map[\"%s\"] is not a file name", h->dir, ft_json_key_at(wm, i)->s); break; }
        for (j = 0; wm && j < i; j++) seen |= !strcmp(ft_json_value_at(wm, j)->s, f->s);
        if (seen) continue;                                       /* each shard once            */
        if (wm && (strchr(f->s, '/') || !strcmp(f->s, ".."))) { r = ft_set_error(FT_ERR_FORMAT, "%s/model.safetensors.index.json: shard \"%s\" is not a file of the directory", h->dir, f->s); break; }
        snprintf(path, sizeof path, "%s/%s", h->dir, wm ? f->s : "model.safetensors");
        if ((r = ft_safetensors_open(&st, path)) != FT_OK) break;
        if (!ft__gguf_keep(h->g, 0, st)) { ft_safetensors_close(st); r = ft_set_error(FT_ERR_NOMEM, "%s: out of memory", path); break; }
        for (j = 0; j < ft_safetensors_count(st) && r == FT_OK; j++) {
            const char *nm = ft_safetensors_name(st, j);
            if (nm && strcmp(nm, "__metadata__")) r = ft__hf_tensor(h, st, path, nm, tied);
        }
    }
    ft_json_free(idx);
    if (r == FT_OK) r = ft__hf_stack_experts(h);
    return r;
}

/* ---- the tokenizer: tokenizer.json's BPE model as tokenizer.ggml.* ------------------------------------ */
typedef struct ft__hf_vocab {
    int64_t n;                      /* tokens (the largest id + 1, or config.json's vocab_size)  */
    ft_gguf_str *tok; int32_t *type; float *score;
    char *pad;                      /* "[PAD<id>]" texts of ids no entry names                  */
} ft__hf_vocab;
static const char *ft__hf_token_text(const ft_json *v) {       /* "text" or {"content": "text"}  */
    if (v && v->kind == FT_JSON_OBJECT) v = ft__json_value(v, "content");
    return v && v->kind == FT_JSON_STRING ? v->s : NULL;
}
static int64_t ft__hf_token_id(const ft_json *tj, const char *text) {
    const ft_json *model = ft__json_value(tj, "model"), *add = ft__json_value(tj, "added_tokens"), *v; int64_t i;
    if (!text) return -1;
    for (i = 0; add && add->kind == FT_JSON_ARRAY && i < add->n; i++) {
        const ft_json *c = ft__json_value(ft_json_at(add, i), "content"), *id = ft__json_value(ft_json_at(add, i), "id");
        if (c && c->kind == FT_JSON_STRING && id && id->kind == FT_JSON_NUMBER && !strcmp(c->s, text)) return (int64_t)id->num;
    }
    v = ft__json_value(ft__json_value(model, "vocab"), text);
    return v && v->kind == FT_JSON_NUMBER ? (int64_t)v->num : -1;
}
/* the vocabulary: model.vocab and added_tokens by id (control when special, user-defined
   otherwise, as the converter types them), <0xXX> byte tokens, gaps padded */
static ft_result ft__hf_vocab_make(ft__hf *h, const ft_json *tj, int spm, ft__hf_vocab *v) {
    const ft_json *model = ft__json_value(tj, "model"), *vocab = ft__json_value(model, "vocab"), *add = ft__json_value(tj, "added_tokens");
    int64_t i, id, cfg_n = -1; double d;
    if (!vocab || vocab->kind != FT_JSON_OBJECT) return ft_set_error(FT_ERR_FORMAT, "%s/tokenizer.json: \"model.vocab\" is not an object", h->dir);
    if (add && add->kind != FT_JSON_ARRAY) return ft_set_error(FT_ERR_FORMAT, "%s/tokenizer.json: \"added_tokens\" is not an array", h->dir);
    for (i = 0, v->n = 0; i < vocab->n; i++) {
        const ft_json *x = ft_json_value_at(vocab, i);
        if (x->kind != FT_JSON_NUMBER || x->num < 0 || x->num >= (1 << 30) || x->num != floor(x->num))
            return ft_set_error(FT_ERR_FORMAT, "%s/tokenizer.json: model.vocab[\"%s\"] is not a token id", h->dir, ft_json_key_at(vocab, i)->s);
        v->n = FT__MAX(v->n, (int64_t)x->num + 1);
    }
    for (i = 0; add && i < add->n; i++) {
        const ft_json *x = ft__json_value(ft_json_at(add, i), "id");
        if (!x || x->kind != FT_JSON_NUMBER || x->num < 0 || x->num >= (1 << 30) || !ft__hf_token_text(ft_json_at(add, i)))
            return ft_set_error(FT_ERR_FORMAT, "%s/tokenizer.json: added_tokens[%lld] needs an id and a content", h->dir, (long long)i);
        v->n = FT__MAX(v->n, (int64_t)x->num + 1);
    }
    if (ft__hf_num(h, h->cfg, "config.json", "vocab_size", 1, 1 << 30, 1, 0, -1, &d) == FT_OK) cfg_n = (int64_t)d;
    v->n = FT__MAX(v->n, cfg_n);                              /* embedding rows past the tokenizer */
    v->tok = FT__CAST(ft_gguf_str *, FT_MALLOC((size_t)v->n * sizeof(ft_gguf_str)));
    v->type = FT__CAST(int32_t *, FT_MALLOC((size_t)v->n * sizeof(int32_t)));
    v->score = FT__CAST(float *, FT_MALLOC((size_t)v->n * sizeof(float)));
    v->pad = FT__CAST(char *, FT_MALLOC((size_t)v->n * 20));
    if (!v->tok || !v->type || !v->score || !v->pad) return ft_set_error(FT_ERR_NOMEM, "%s: out of memory", h->dir);
    for (id = 0; id < v->n; id++) {
        v->tok[id].s = v->pad + id * 20;
        v->tok[id].n = (uint64_t)snprintf(v->pad + id * 20, 20, "[PAD%lld]", (long long)id);
        v->type[id] = FT__TT_UNUSED; v->score[id] = -1e30f;          /* below every merge's */
    }
    for (i = 0; i < vocab->n; i++) {
        const ft_json *k = ft_json_key_at(vocab, i); id = (int64_t)ft_json_value_at(vocab, i)->num;
        v->tok[id].s = k->s; v->tok[id].n = (uint64_t)k->len;
        v->type[id] = spm && k->len == 6 && !strncmp(k->s, "<0x", 3) && k->s[5] == '>' ? FT__TT_BYTE : FT__TT_NORMAL;
    }
    for (i = 0; add && i < add->n; i++) {
        const ft_json *a = ft_json_at(add, i), *sp = ft__json_value(a, "special"); const char *c = ft__hf_token_text(a);
        id = (int64_t)ft__json_value(a, "id")->num;
        v->tok[id].s = c; v->tok[id].n = strlen(c);
        v->type[id] = sp && sp->num != 0 ? FT__TT_CONTROL : FT__TT_USER;
    }
    id = ft__hf_token_id(tj, ft__hf_token_text(ft__json_value(model, "unk_token")));
    if (id >= 0 && id < v->n) v->type[id] = FT__TT_UNKNOWN;
    return FT_OK;
}
/* model.merges ("a b" strings, or [a, b] pairs) as "a b" strings; for SentencePiece, each merge
   result's score is minus its rank (the merge order), as llama.cpp's scores order them */
static ft_result ft__hf_merges(ft__hf *h, const ft_json *tj, int spm, ft__hf_vocab *v) {
    const ft_json *mg = ft__json_value(ft__json_value(tj, "model"), "merges"), *vocab = ft__json_value(ft__json_value(tj, "model"), "vocab");
    ft_gguf_str *ms; char *buf = NULL, *p; size_t total = 0; int64_t i; ft_result r;
    if (!mg) return FT_OK;
    if (mg->kind != FT_JSON_ARRAY) return ft_set_error(FT_ERR_FORMAT, "%s/tokenizer.json: \"model.merges\" is not an array", h->dir);
    for (i = 0; i < mg->n; i++) {
        const ft_json *m = ft_json_at(mg, i);
        if (m->kind == FT_JSON_STRING) total += (size_t)m->len + 1;
        else if (m->kind == FT_JSON_ARRAY && m->n == 2 && ft_json_at(m, 0)->kind == FT_JSON_STRING && ft_json_at(m, 1)->kind == FT_JSON_STRING)
            total += (size_t)(ft_json_at(m, 0)->len + ft_json_at(m, 1)->len) + 2;
        else return ft_set_error(FT_ERR_FORMAT, "%s/tokenizer.json: model.merges[%lld] is not \"a b\" or [a, b]", h->dir, (long long)i);
    }
    ms = FT__CAST(ft_gguf_str *, FT_MALLOC((size_t)FT__MAX(mg->n, 1) * sizeof *ms));
    buf = FT__CAST(char *, FT_MALLOC(total + 1));
    if (!ms || !buf) { FT_FREE(ms); FT_FREE(buf); return ft_set_error(FT_ERR_NOMEM, "%s: out of memory", h->dir); }
    for (p = buf, i = 0; i < mg->n; i++) {
        const ft_json *m = ft_json_at(mg, i); const ft_json *res;
        ms[i].s = p;
        if (m->kind == FT_JSON_STRING) { memcpy(p, m->s, (size_t)m->len); p += m->len; }
        else {
            memcpy(p, ft_json_at(m, 0)->s, (size_t)ft_json_at(m, 0)->len); p += ft_json_at(m, 0)->len;
            *p++ = ' ';
            memcpy(p, ft_json_at(m, 1)->s, (size_t)ft_json_at(m, 1)->len); p += ft_json_at(m, 1)->len;
        }
        ms[i].n = (uint64_t)(p - ms[i].s);
        *p++ = 0;
        if (spm) {                                  /* the result: the pair without its space */
            char *sp = strchr(FT__CAST(char *, ms[i].s), ' ');
            if (sp) {
                memmove(sp, sp + 1, strlen(sp + 1) + 1);
                res = ft__json_value(vocab, ms[i].s);
                if (res && res->kind == FT_JSON_NUMBER && res->num < (double)v->n && v->score[(int64_t)res->num] == -1e30f) v->score[(int64_t)res->num] = -(float)(i + 1);
                memmove(sp + 1, sp, strlen(sp) + 1); *sp = ' ';
            }
        }
    }
    r = spm ? FT_OK : ft_gguf_set_str_array(h->w, "tokenizer.ggml.merges", ms, (uint64_t)mg->n);
    FT_FREE(ms); FT_FREE(buf);
    return r;
}
/* the pre-tokenizer's llama.cpp name, from tokenizer.json's pre_tokenizer: ByteLevel alone
   (gpt2), Digits + ByteLevel (smollm), or a Split by llama3's or qwen2's regex + ByteLevel */
static const char *ft__hf_pre(const ft__hf *h, const ft_json *tj) {
    static const char llama3[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    static const char qwen2[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    const ft_json *pt = ft__json_value(tj, "pre_tokenizer"), *seq, *im = ft__json_value(ft__json_value(tj, "model"), "ignore_merges");
    int64_t i; int bytelevel = 0, digits = 0, other = 0; const char *regex = NULL;
    (void)h;
    if (!pt) return NULL;
    seq = ft__json_value(pt, "pretokenizers");
    for (i = 0; i < (seq && seq->kind == FT_JSON_ARRAY ? seq->n : 1); i++) {
        const ft_json *p = seq ? ft_json_at(seq, i) : pt, *ty = ft__json_value(p, "type");
        const char *t = ty && ty->kind == FT_JSON_STRING ? ty->s : "";
        if (!strcmp(t, "Sequence")) continue;
        if (!strcmp(t, "ByteLevel")) bytelevel = 1;
        else if (!strcmp(t, "Digits")) { const ft_json *ind = ft__json_value(p, "individual_digits"); digits = ind && ind->num != 0; other |= !digits; }
        else if (!strcmp(t, "Split")) { const ft_json *re = ft__json_value(ft__json_value(p, "pattern"), "Regex"); regex = re && re->kind == FT_JSON_STRING ? re->s : ""; }
        else other = 1;
    }
    if (!bytelevel || other) return NULL;
    if (!regex) return digits ? "smollm" : "gpt2";
    if (digits) return NULL;
    if (!strcmp(regex, llama3)) return im && im->num != 0 ? "llama-bpe" : "dbrx";
    if (!strcmp(regex, qwen2)) return "qwen2";
    return NULL;
}
/* SentencePiece-style (byte fallback): is a space prefix added (Prepend "▁" in the normalizer, or
   a Metaspace pre-tokenizer that prepends)? */
static int ft__hf_space_prefix(const ft_json *tj) {
    const ft_json *parts[2]; int k; int64_t i;
    parts[0] = ft__json_value(tj, "normalizer"); parts[1] = ft__json_value(tj, "pre_tokenizer");
    for (k = 0; k < 2; k++) {
        const ft_json *seq = ft__json_value(parts[k], "normalizers");
        if (!seq) seq = ft__json_value(parts[k], "pretokenizers");
        for (i = 0; parts[k] && i < (seq && seq->kind == FT_JSON_ARRAY ? seq->n : 1); i++) {
            const ft_json *p = seq ? ft_json_at(seq, i) : parts[k], *ty = ft__json_value(p, "type"), *ps = ft__json_value(p, "prepend_scheme");
            if (ty && ty->kind == FT_JSON_STRING && !strcmp(ty->s, "Prepend")) return 1;
            if (ty && ty->kind == FT_JSON_STRING && !strcmp(ty->s, "Metaspace") && !(ps && ps->kind == FT_JSON_STRING && !strcmp(ps->s, "never"))) return 1;
        }
    }
    return 0;
}
/* bos / eos / unk / pad: tokenizer_config.json's *_token texts, else config.json's *_token_id */
static ft_result ft__hf_special_ids(ft__hf *h, const ft_json *tj, const ft__hf_vocab *v) {
    static const char *const nm[4] = {"bos", "eos", "unk", "pad"};
    static const char *const key[4] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id"};
    const ft_json *tc = h->tcfg_doc ? ft_json_root(h->tcfg_doc) : NULL; int k;
    for (k = 0; k < 4; k++) {
        char ck[32]; int64_t id; double d;
        snprintf(ck, sizeof ck, "%s_token", nm[k]);
        id = ft__hf_token_id(tj, ft__hf_token_text(ft__json_value(tc, ck)));
        if (id < 0 && k != 2) {
            snprintf(ck, sizeof ck, "%s_token_id", nm[k]);
            if (ft__json_value(h->cfg, ck) && ft__json_value(h->cfg, ck)->kind == FT_JSON_ARRAY) d = ft_json_at(ft__json_value(h->cfg, ck), 0)->num;
            else FT__HF_TRY(ft__hf_num(h, h->cfg, "config.json", ck, 0, 1 << 30, 1, 0, -1, &d));
            id = (int64_t)d;
        }
        if (id >= 0 && id < v->n) FT__HF_TRY(ft_gguf_set_int(h->w, key[k], FT_GGUF_UINT32, id));
    }
    return FT_OK;
}
/* add_bos_token / add_eos_token (tokenizer_config.json, else the post-processor's template) */
static ft_result ft__hf_add_flags(ft__hf *h, const ft_json *tj) {
    const ft_json *tc = h->tcfg_doc ? ft_json_root(h->tcfg_doc) : NULL, *b = ft__json_value(tc, "add_bos_token"), *e = ft__json_value(tc, "add_eos_token");
    const ft_json *pp = ft__json_value(tj, "post_processor"), *ty = ft__json_value(pp, "type"), *single = ft__json_value(pp, "single");
    if (!b && ty && ty->kind == FT_JSON_STRING && !strcmp(ty->s, "TemplateProcessing") && single && single->kind == FT_JSON_ARRAY && single->n > 0)
        FT__HF_TRY(ft_gguf_set_int(h->w, "tokenizer.ggml.add_bos_token", FT_GGUF_BOOL, ft__json_value(ft_json_at(single, 0), "SpecialToken") != NULL));
    if (b && b->kind == FT_JSON_BOOL) FT__HF_TRY(ft_gguf_set_int(h->w, "tokenizer.ggml.add_bos_token", FT_GGUF_BOOL, b->num != 0));
    if (e && e->kind == FT_JSON_BOOL) FT__HF_TRY(ft_gguf_set_int(h->w, "tokenizer.ggml.add_eos_token", FT_GGUF_BOOL, e->num != 0));
    return FT_OK;
}
/* the chat template (tokenizer_config.json's chat_template, or chat_template.jinja) and the stop
   ids of generation_config.json's eos_token_id */
static ft_result ft__hf_chat(ft__hf *h) {
    const ft_json *tc = h->tcfg_doc ? ft_json_root(h->tcfg_doc) : NULL, *ct = ft__json_value(tc, "chat_template"), *eos;
    char path[1200]; int64_t i;
    if (ct && ct->kind == FT_JSON_ARRAY) {                         /* [{name, template}]: the default */
        const ft_json *list = ct;
        for (i = 0, ct = NULL; i < list->n; i++) {
            const ft_json *x = ft_json_at(list, i), *n = ft__json_value(x, "name");
            if (n && n->kind == FT_JSON_STRING && !strcmp(n->s, "default")) ct = ft__json_value(x, "template");
        }
    }
    if (ct && ct->kind == FT_JSON_STRING) FT__HF_TRY(ft_gguf_set_str(h->w, "tokenizer.chat_template", ct->s));
    else {
        FILE *f; long n; char *text;
        snprintf(path, sizeof path, "%s/chat_template.jinja", h->dir);
        if ((f = fopen(path, "rb")) != NULL) {
            ft_result r = FT_OK;
            if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0 || !(text = FT__CAST(char *, FT_MALLOC((size_t)n + 1))))
                r = ft_set_error(FT_ERR_IO, "%s: read failed", path);
            else {
                text[fread(text, 1, (size_t)n, f)] = 0;
                r = ft_gguf_set_str(h->w, "tokenizer.chat_template", text);
                FT_FREE(text);
            }
            fclose(f);
            if (r != FT_OK) return r;
        }
    }
    eos = h->gen_doc ? ft__json_value(ft_json_root(h->gen_doc), "eos_token_id") : NULL;
    if (eos && eos->kind == FT_JSON_ARRAY && eos->n > 0 && eos->n <= 8) {
        int32_t ids[8];
        for (i = 0; i < eos->n; i++) {
            if (ft_json_at(eos, i)->kind != FT_JSON_NUMBER || ft_json_at(eos, i)->num < 0) return ft_set_error(FT_ERR_FORMAT, "%s/generation_config.json: eos_token_id[%lld] is not a token id", h->dir, (long long)i);
            ids[i] = (int32_t)ft_json_at(eos, i)->num;
        }
        FT__HF_TRY(ft_gguf_set_array(h->w, "finetune.stop_token_ids", FT_GGUF_INT32, ids, (uint64_t)eos->n));
    }
    return FT_OK;
}
/* tokenizer.json -> the tokenizer.ggml.* keys (no tokenizer.json: a model without a vocabulary) */
static ft_result ft__hf_tokenizer(ft__hf *h) {
    const ft_json *tj, *model, *ty, *bf; ft__hf_vocab v; const char *pre = NULL; int spm; ft_result r;
    if (!h->tok_doc) return FT_OK;
    tj = ft_json_root(h->tok_doc);
    model = ft__json_value(tj, "model");
    ty = ft__json_value(model, "type");
    if (!ty || ty->kind != FT_JSON_STRING || strcmp(ty->s, "BPE"))
        return ft_set_error(FT_ERR_UNSUPPORTED, "%s/tokenizer.json: model.type \"%s\" is not supported (BPE is)", h->dir, ty && ty->kind == FT_JSON_STRING ? ty->s : "?");
    bf = ft__json_value(model, "byte_fallback");
    spm = bf && bf->num != 0;
    if (!spm && !(pre = ft__hf_pre(h, tj)))
        return ft_set_error(FT_ERR_UNSUPPORTED, "%s/tokenizer.json: \"pre_tokenizer\" is none finetune.h knows (ByteLevel; Digits + ByteLevel; a Split by llama3's or qwen2's regex + ByteLevel)", h->dir);
    memset(&v, 0, sizeof v);
    r = ft__hf_vocab_make(h, tj, spm, &v);
    if (r == FT_OK) r = ft_gguf_set_str(h->w, "tokenizer.ggml.model", spm ? "llama" : "gpt2");
    if (r == FT_OK && pre) r = ft_gguf_set_str(h->w, "tokenizer.ggml.pre", pre);
    if (r == FT_OK) r = ft__hf_merges(h, tj, spm, &v);
    if (r == FT_OK) r = ft_gguf_set_str_array(h->w, "tokenizer.ggml.tokens", v.tok, (uint64_t)v.n);
    if (r == FT_OK) r = ft_gguf_set_array(h->w, "tokenizer.ggml.token_type", FT_GGUF_INT32, v.type, (uint64_t)v.n);
    if (r == FT_OK && spm) r = ft_gguf_set_array(h->w, "tokenizer.ggml.scores", FT_GGUF_FLOAT32, v.score, (uint64_t)v.n);
    if (r == FT_OK && spm) r = ft_gguf_set_int(h->w, "tokenizer.ggml.add_space_prefix", FT_GGUF_BOOL, ft__hf_space_prefix(tj));
    if (r == FT_OK) r = ft__hf_special_ids(h, tj, &v);
    if (r == FT_OK) r = ft__hf_add_flags(h, tj);
    if (r == FT_OK) r = ft__hf_chat(h);
    FT_FREE(v.tok); FT_FREE(v.type); FT_FREE(v.score); FT_FREE(v.pad);
    return r;
}

/* a Hugging Face model directory as a GGUF (see the section's head) */
static ft_result ft__gguf_open_hf(ft_gguf **out, const char *dir) {
    static const char *const files[4] = {"config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"};
    ft__hf h; ft_json_doc **docs[4]; char path[1200]; int k; ft_result r;
    *out = NULL;
    memset(&h, 0, sizeof h);
    h.dir = dir;
    docs[0] = &h.cfg_doc; docs[1] = &h.tok_doc; docs[2] = &h.tcfg_doc; docs[3] = &h.gen_doc;
    for (k = 0, r = FT_OK; k < 4 && r == FT_OK; k++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[k]);
        r = ft__json_file(path, docs[k], 0);
        if (k == 0 && r == FT_OK && !h.cfg_doc) r = ft_set_error(FT_ERR_IO, "%s: a directory without config.json: neither a GGUF file nor a Hugging Face model", dir);
    }
    if (r == FT_OK) { h.cfg = ft_json_root(h.cfg_doc); r = ft_gguf_writer_init(&h.w); }
    if (r == FT_OK) r = ft__gguf_new(&h.g, dir);
    if (r == FT_OK) r = ft__hf_config(&h);
    if (r == FT_OK) r = ft__hf_weights(&h);
    if (r == FT_OK) r = ft__hf_tokenizer(&h);
    if (r == FT_OK) r = ft__gguf_adopt(h.g, h.w);
    for (k = 0; k < 4; k++) ft_json_free(*docs[k]);
    ft_gguf_writer_free(h.w);
    FT_FREE(h.experts);
    if (r != FT_OK) { ft_gguf_close(h.g); return r; }
    *out = h.g;
    return FT_OK;
}
#undef FT__HF_TRY

/* ============================================================================================
   [tokenizer] byte-level BPE ("gpt2") and SentencePiece BPE ("llama") giving the same ids as
   llama.cpp (src/llama-vocab.cpp, src/unicode.cpp), so a model fine-tuned here sees at
   inference in llama.cpp the tokens it was trained on. Pipeline of ft_tokenize:
     1. special tokens: cut the text at every control / user-defined token written in it,
        longest token first (llama.cpp's tokenizer_st_partition);
     2. gpt2: decode UTF-8 to code points, split into words by the model's pre-tokenizer regex
        (hand-written matchers, one per regex, equal to llama.cpp's), map every byte of a word
        to its GPT-2 "byte character", then merge adjacent symbols by merge rank (lowest first,
        leftmost on ties) with a heap over a linked list of symbols;
        llama: spaces -> U+2581, merge the best-scored adjacent pair first, bytes not in the
        vocabulary -> <0xXX> tokens.
   Token text -> id and (left id, right id) -> merge are open-addressing FNV-1a hash tables.
   ============================================================================================ */

/* ---- Unicode categories -------------------------------------------------------------------- */
/* generated by tools/ref/gen_unicode_tables.py from Unicode 15.1.0 (the version of llama.cpp's unicode-data.cpp) */
/* \p{L}: Lu Ll Lt Lm Lo: 660 ranges */
static const uint32_t ft__uc_letter[660][2] = {
    {0x41, 0x5A}, {0x61, 0x7A}, {0xAA, 0xAA}, {0xB5, 0xB5}, {0xBA, 0xBA}, {0xC0, 0xD6},
    {0xD8, 0xF6}, {0xF8, 0x2C1}, {0x2C6, 0x2D1}, {0x2E0, 0x2E4}, {0x2EC, 0x2EC}, {0x2EE, 0x2EE},
    {0x370, 0x374}, {0x376, 0x377}, {0x37A, 0x37D}, {0x37F, 0x37F}, {0x386, 0x386}, {0x388, 0x38A},
    {0x38C, 0x38C}, {0x38E, 0x3A1}, {0x3A3, 0x3F5}, {0x3F7, 0x481}, {0x48A, 0x52F}, {0x531, 0x556},
    {0x559, 0x559}, {0x560, 0x588}, {0x5D0, 0x5EA}, {0x5EF, 0x5F2}, {0x620, 0x64A}, {0x66E, 0x66F},
    {0x671, 0x6D3}, {0x6D5, 0x6D5}, {0x6E5, 0x6E6}, {0x6EE, 0x6EF}, {0x6FA, 0x6FC}, {0x6FF, 0x6FF},
    {0x710, 0x710}, {0x712, 0x72F}, {0x74D, 0x7A5}, {0x7B1, 0x7B1}, {0x7CA, 0x7EA}, {0x7F4, 0x7F5},
    {0x7FA, 0x7FA}, {0x800, 0x815}, {0x81A, 0x81A}, {0x824, 0x824}, {0x828, 0x828}, {0x840, 0x858},
    {0x860, 0x86A}, {0x870, 0x887}, {0x889, 0x88E}, {0x8A0, 0x8C9}, {0x904, 0x939}, {0x93D, 0x93D},
    {0x950, 0x950}, {0x958, 0x961}, {0x971, 0x980}, {0x985, 0x98C}, {0x98F, 0x990}, {0x993, 0x9A8},
    {0x9AA, 0x9B0}, {0x9B2, 0x9B2}, {0x9B6, 0x9B9}, {0x9BD, 0x9BD}, {0x9CE, 0x9CE}, {0x9DC, 0x9DD},
    {0x9DF, 0x9E1}, {0x9F0, 0x9F1}, {0x9FC, 0x9FC}, {0xA05, 0xA0A}, {0xA0F, 0xA10}, {0xA13, 0xA28},
    {0xA2A, 0xA30}, {0xA32, 0xA33}, {0xA35, 0xA36}, {0xA38, 0xA39}, {0xA59, 0xA5C}, {0xA5E, 0xA5E},
    {0xA72, 0xA74}, {0xA85, 0xA8D}, {0xA8F, 0xA91}, {0xA93, 0xAA8}, {0xAAA, 0xAB0}, {0xAB2, 0xAB3},
    {0xAB5, 0xAB9}, {0xABD, 0xABD}, {0xAD0, 0xAD0}, {0xAE0, 0xAE1}, {0xAF9, 0xAF9}, {0xB05, 0xB0C},
    {0xB0F, 0xB10}, {0xB13, 0xB28}, {0xB2A, 0xB30}, {0xB32, 0xB33}, {0xB35, 0xB39}, {0xB3D, 0xB3D},
    {0xB5C, 0xB5D}, {0xB5F, 0xB61}, {0xB71, 0xB71}, {0xB83, 0xB83}, {0xB85, 0xB8A}, {0xB8E, 0xB90},
    {0xB92, 0xB95}, {0xB99, 0xB9A}, {0xB9C, 0xB9C}, {0xB9E, 0xB9F}, {0xBA3, 0xBA4}, {0xBA8, 0xBAA},
    {0xBAE, 0xBB9}, {0xBD0, 0xBD0}, {0xC05, 0xC0C}, {0xC0E, 0xC10}, {0xC12, 0xC28}, {0xC2A, 0xC39},
    {0xC3D, 0xC3D}, {0xC58, 0xC5A}, {0xC5D, 0xC5D}, {0xC60, 0xC61}, {0xC80, 0xC80}, {0xC85, 0xC8C},
    {0xC8E, 0xC90}, {0xC92, 0xCA8}, {0xCAA, 0xCB3}, {0xCB5, 0xCB9}, {0xCBD, 0xCBD}, {0xCDD, 0xCDE},
    {0xCE0, 0xCE1}, {0xCF1, 0xCF2}, {0xD04, 0xD0C}, {0xD0E, 0xD10}, {0xD12, 0xD3A}, {0xD3D, 0xD3D},
    {0xD4E, 0xD4E}, {0xD54, 0xD56}, {0xD5F, 0xD61}, {0xD7A, 0xD7F}, {0xD85, 0xD96}, {0xD9A, 0xDB1},
    {0xDB3, 0xDBB}, {0xDBD, 0xDBD}, {0xDC0, 0xDC6}, {0xE01, 0xE30}, {0xE32, 0xE33}, {0xE40, 0xE46},
    {0xE81, 0xE82}, {0xE84, 0xE84}, {0xE86, 0xE8A}, {0xE8C, 0xEA3}, {0xEA5, 0xEA5}, {0xEA7, 0xEB0},
    {0xEB2, 0xEB3}, {0xEBD, 0xEBD}, {0xEC0, 0xEC4}, {0xEC6, 0xEC6}, {0xEDC, 0xEDF}, {0xF00, 0xF00},
    {0xF40, 0xF47}, {0xF49, 0xF6C}, {0xF88, 0xF8C}, {0x1000, 0x102A}, {0x103F, 0x103F},
    {0x1050, 0x1055}, {0x105A, 0x105D}, {0x1061, 0x1061}, {0x1065, 0x1066}, {0x106E, 0x1070},
    {0x1075, 0x1081}, {0x108E, 0x108E}, {0x10A0, 0x10C5}, {0x10C7, 0x10C7}, {0x10CD, 0x10CD},
    {0x10D0, 0x10FA}, {0x10FC, 0x1248}, {0x124A, 0x124D}, {0x1250, 0x1256}, {0x1258, 0x1258},
    {0x125A, 0x125D}, {0x1260, 0x1288}, {0x128A, 0x128D}, {0x1290, 0x12B0}, {0x12B2, 0x12B5},
    {0x12B8, 0x12BE}, {0x12C0, 0x12C0}, {0x12C2, 0x12C5}, {0x12C8, 0x12D6}, {0x12D8, 0x1310},
    {0x1312, 0x1315}, {0x1318, 0x135A}, {0x1380, 0x138F}, {0x13A0, 0x13F5}, {0x13F8, 0x13FD},
    {0x1401, 0x166C}, {0x166F, 0x167F}, {0x1681, 0x169A}, {0x16A0, 0x16EA}, {0x16F1, 0x16F8},
    {0x1700, 0x1711}, {0x171F, 0x1731}, {0x1740, 0x1751}, {0x1760, 0x176C}, {0x176E, 0x1770},
    {0x1780, 0x17B3}, {0x17D7, 0x17D7}, {0x17DC, 0x17DC}, {0x1820, 0x1878}, {0x1880, 0x1884},
    {0x1887, 0x18A8}, {0x18AA, 0x18AA}, {0x18B0, 0x18F5}, {0x1900, 0x191E}, {0x1950, 0x196D},
    {0x1970, 0x1974}, {0x1980, 0x19AB}, {0x19B0, 0x19C9}, {0x1A00, 0x1A16}, {0x1A20, 0x1A54},
    {0x1AA7, 0x1AA7}, {0x1B05, 0x1B33}, {0x1B45, 0x1B4C}, {0x1B83, 0x1BA0}, {0x1BAE, 0x1BAF},
    {0x1BBA, 0x1BE5}, {0x1C00, 0x1C23}, {0x1C4D, 0x1C4F}, {0x1C5A, 0x1C7D}, {0x1C80, 0x1C88},
    {0x1C90, 0x1CBA}, {0x1CBD, 0x1CBF}, {0x1CE9, 0x1CEC}, {0x1CEE, 0x1CF3}, {0x1CF5, 0x1CF6},
    {0x1CFA, 0x1CFA}, {0x1D00, 0x1DBF}, {0x1E00, 0x1F15}, {0x1F18, 0x1F1D}, {0x1F20, 0x1F45},
    {0x1F48, 0x1F4D}, {0x1F50, 0x1F57}, {0x1F59, 0x1F59}, {0x1F5B, 0x1F5B}, {0x1F5D, 0x1F5D},
    {0x1F5F, 0x1F7D}, {0x1F80, 0x1FB4}, {0x1FB6, 0x1FBC}, {0x1FBE, 0x1FBE}, {0x1FC2, 0x1FC4},
    {0x1FC6, 0x1FCC}, {0x1FD0, 0x1FD3}, {0x1FD6, 0x1FDB}, {0x1FE0, 0x1FEC}, {0x1FF2, 0x1FF4},
    {0x1FF6, 0x1FFC}, {0x2071, 0x2071}, {0x207F, 0x207F}, {0x2090, 0x209C}, {0x2102, 0x2102},
    {0x2107, 0x2107}, {0x210A, 0x2113}, {0x2115, 0x2115}, {0x2119, 0x211D}, {0x2124, 0x2124},
    {0x2126, 0x2126}, {0x2128, 0x2128}, {0x212A, 0x212D}, {0x212F, 0x2139}, {0x213C, 0x213F},
    {0x2145, 0x2149}, {0x214E, 0x214E}, {0x2183, 0x2184}, {0x2C00, 0x2CE4}, {0x2CEB, 0x2CEE},
    {0x2CF2, 0x2CF3}, {0x2D00, 0x2D25}, {0x2D27, 0x2D27}, {0x2D2D, 0x2D2D}, {0x2D30, 0x2D67},
    {0x2D6F, 0x2D6F}, {0x2D80, 0x2D96}, {0x2DA0, 0x2DA6}, {0x2DA8, 0x2DAE}, {0x2DB0, 0x2DB6},
    {0x2DB8, 0x2DBE}, {0x2DC0, 0x2DC6}, {0x2DC8, 0x2DCE}, {0x2DD0, 0x2DD6}, {0x2DD8, 0x2DDE},
    {0x2E2F, 0x2E2F}, {0x3005, 0x3006}, {0x3031, 0x3035}, {0x303B, 0x303C}, {0x3041, 0x3096},
    {0x309D, 0x309F}, {0x30A1, 0x30FA}, {0x30FC, 0x30FF}, {0x3105, 0x312F}, {0x3131, 0x318E},
    {0x31A0, 0x31BF}, {0x31F0, 0x31FF}, {0x3400, 0x4DBF}, {0x4E00, 0xA48C}, {0xA4D0, 0xA4FD},
    {0xA500, 0xA60C}, {0xA610, 0xA61F}, {0xA62A, 0xA62B}, {0xA640, 0xA66E}, {0xA67F, 0xA69D},
    {0xA6A0, 0xA6E5}, {0xA717, 0xA71F}, {0xA722, 0xA788}, {0xA78B, 0xA7CA}, {0xA7D0, 0xA7D1},
    {0xA7D3, 0xA7D3}, {0xA7D5, 0xA7D9}, {0xA7F2, 0xA801}, {0xA803, 0xA805}, {0xA807, 0xA80A},
    {0xA80C, 0xA822}, {0xA840, 0xA873}, {0xA882, 0xA8B3}, {0xA8F2, 0xA8F7}, {0xA8FB, 0xA8FB},
    {0xA8FD, 0xA8FE}, {0xA90A, 0xA925}, {0xA930, 0xA946}, {0xA960, 0xA97C}, {0xA984, 0xA9B2},
    {0xA9CF, 0xA9CF}, {0xA9E0, 0xA9E4}, {0xA9E6, 0xA9EF}, {0xA9FA, 0xA9FE}, {0xAA00, 0xAA28},
    {0xAA40, 0xAA42}, {0xAA44, 0xAA4B}, {0xAA60, 0xAA76}, {0xAA7A, 0xAA7A}, {0xAA7E, 0xAAAF},
    {0xAAB1, 0xAAB1}, {0xAAB5, 0xAAB6}, {0xAAB9, 0xAABD}, {0xAAC0, 0xAAC0}, {0xAAC2, 0xAAC2},
    {0xAADB, 0xAADD}, {0xAAE0, 0xAAEA}, {0xAAF2, 0xAAF4}, {0xAB01, 0xAB06}, {0xAB09, 0xAB0E},
    {0xAB11, 0xAB16}, {0xAB20, 0xAB26}, {0xAB28, 0xAB2E}, {0xAB30, 0xAB5A}, {0xAB5C, 0xAB69},
    {0xAB70, 0xABE2}, {0xAC00, 0xD7A3}, {0xD7B0, 0xD7C6}, {0xD7CB, 0xD7FB}, {0xF900, 0xFA6D},
    {0xFA70, 0xFAD9}, {0xFB00, 0xFB06}, {0xFB13, 0xFB17}, {0xFB1D, 0xFB1D}, {0xFB1F, 0xFB28},
    {0xFB2A, 0xFB36}, {0xFB38, 0xFB3C}, {0xFB3E, 0xFB3E}, {0xFB40, 0xFB41}, {0xFB43, 0xFB44},
    {0xFB46, 0xFBB1}, {0xFBD3, 0xFD3D}, {0xFD50, 0xFD8F}, {0xFD92, 0xFDC7}, {0xFDF0, 0xFDFB},
    {0xFE70, 0xFE74}, {0xFE76, 0xFEFC}, {0xFF21, 0xFF3A}, {0xFF41, 0xFF5A}, {0xFF66, 0xFFBE},
    {0xFFC2, 0xFFC7}, {0xFFCA, 0xFFCF}, {0xFFD2, 0xFFD7}, {0xFFDA, 0xFFDC}, {0x10000, 0x1000B},
    {0x1000D, 0x10026}, {0x10028, 0x1003A}, {0x1003C, 0x1003D}, {0x1003F, 0x1004D},
    {0x10050, 0x1005D}, {0x10080, 0x100FA}, {0x10280, 0x1029C}, {0x102A0, 0x102D0},
    {0x10300, 0x1031F}, {0x1032D, 0x10340}, {0x10342, 0x10349}, {0x10350, 0x10375},
    {0x10380, 0x1039D}, {0x103A0, 0x103C3}, {0x103C8, 0x103CF}, {0x10400, 0x1049D},
    {0x104B0, 0x104D3}, {0x104D8, 0x104FB}, {0x10500, 0x10527}, {0x10530, 0x10563},
    {0x10570, 0x1057A}, {0x1057C, 0x1058A}, {0x1058C, 0x10592}, {0x10594, 0x10595},
    {0x10597, 0x105A1}, {0x105A3, 0x105B1}, {0x105B3, 0x105B9}, {0x105BB, 0x105BC},
    {0x10600, 0x10736}, {0x10740, 0x10755}, {0x10760, 0x10767}, {0x10780, 0x10785},
    {0x10787, 0x107B0}, {0x107B2, 0x107BA}, {0x10800, 0x10805}, {0x10808, 0x10808},
    {0x1080A, 0x10835}, {0x10837, 0x10838}, {0x1083C, 0x1083C}, {0x1083F, 0x10855},
    {0x10860, 0x10876}, {0x10880, 0x1089E}, {0x108E0, 0x108F2}, {0x108F4, 0x108F5},
    {0x10900, 0x10915}, {0x10920, 0x10939}, {0x10980, 0x109B7}, {0x109BE, 0x109BF},
    {0x10A00, 0x10A00}, {0x10A10, 0x10A13}, {0x10A15, 0x10A17}, {0x10A19, 0x10A35},
    {0x10A60, 0x10A7C}, {0x10A80, 0x10A9C}, {0x10AC0, 0x10AC7}, {0x10AC9, 0x10AE4},
    {0x10B00, 0x10B35}, {0x10B40, 0x10B55}, {0x10B60, 0x10B72}, {0x10B80, 0x10B91},
    {0x10C00, 0x10C48}, {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2}, {0x10D00, 0x10D23},
    {0x10E80, 0x10EA9}, {0x10EB0, 0x10EB1}, {0x10F00, 0x10F1C}, {0x10F27, 0x10F27},
    {0x10F30, 0x10F45}, {0x10F70, 0x10F81}, {0x10FB0, 0x10FC4}, {0x10FE0, 0x10FF6},
    {0x11003, 0x11037}, {0x11071, 0x11072}, {0x11075, 0x11075}, {0x11083, 0x110AF},
    {0x110D0, 0x110E8}, {0x11103, 0x11126}, {0x11144, 0x11144}, {0x11147, 0x11147},
    {0x11150, 0x11172}, {0x11176, 0x11176}, {0x11183, 0x111B2}, {0x111C1, 0x111C4},
    {0x111DA, 0x111DA}, {0x111DC, 0x111DC}, {0x11200, 0x11211}, {0x11213, 0x1122B},
    {0x1123F, 0x11240}, {0x11280, 0x11286}, {0x11288, 0x11288}, {0x1128A, 0x1128D},
    {0x1128F, 0x1129D}, {0x1129F, 0x112A8}, {0x112B0, 0x112DE}, {0x11305, 0x1130C},
    {0x1130F, 0x11310}, {0x11313, 0x11328}, {0x1132A, 0x11330}, {0x11332, 0x11333},
    {0x11335, 0x11339}, {0x1133D, 0x1133D}, {0x11350, 0x11350}, {0x1135D, 0x11361},
    {0x11400, 0x11434}, {0x11447, 0x1144A}, {0x1145F, 0x11461}, {0x11480, 0x114AF},
    {0x114C4, 0x114C5}, {0x114C7, 0x114C7}, {0x11580, 0x115AE}, {0x115D8, 0x115DB},
    {0x11600, 0x1162F}, {0x11644, 0x11644}, {0x11680, 0x116AA}, {0x116B8, 0x116B8},
    {0x11700, 0x1171A}, {0x11740, 0x11746}, {0x11800, 0x1182B}, {0x118A0, 0x118DF},
    {0x118FF, 0x11906}, {0x11909, 0x11909}, {0x1190C, 0x11913}, {0x11915, 0x11916},
    {0x11918, 0x1192F}, {0x1193F, 0x1193F}, {0x11941, 0x11941}, {0x119A0, 0x119A7},
    {0x119AA, 0x119D0}, {0x119E1, 0x119E1}, {0x119E3, 0x119E3}, {0x11A00, 0x11A00},
    {0x11A0B, 0x11A32}, {0x11A3A, 0x11A3A}, {0x11A50, 0x11A50}, {0x11A5C, 0x11A89},
    {0x11A9D, 0x11A9D}, {0x11AB0, 0x11AF8}, {0x11C00, 0x11C08}, {0x11C0A, 0x11C2E},
    {0x11C40, 0x11C40}, {0x11C72, 0x11C8F}, {0x11D00, 0x11D06}, {0x11D08, 0x11D09},
    {0x11D0B, 0x11D30}, {0x11D46, 0x11D46}, {0x11D60, 0x11D65}, {0x11D67, 0x11D68},
    {0x11D6A, 0x11D89}, {0x11D98, 0x11D98}, {0x11EE0, 0x11EF2}, {0x11F02, 0x11F02},
    {0x11F04, 0x11F10}, {0x11F12, 0x11F33}, {0x11FB0, 0x11FB0}, {0x12000, 0x12399},
    {0x12480, 0x12543}, {0x12F90, 0x12FF0}, {0x13000, 0x1342F}, {0x13441, 0x13446},
    {0x14400, 0x14646}, {0x16800, 0x16A38}, {0x16A40, 0x16A5E}, {0x16A70, 0x16ABE},
    {0x16AD0, 0x16AED}, {0x16B00, 0x16B2F}, {0x16B40, 0x16B43}, {0x16B63, 0x16B77},
    {0x16B7D, 0x16B8F}, {0x16E40, 0x16E7F}, {0x16F00, 0x16F4A}, {0x16F50, 0x16F50},
    {0x16F93, 0x16F9F}, {0x16FE0, 0x16FE1}, {0x16FE3, 0x16FE3}, {0x17000, 0x187F7},
    {0x18800, 0x18CD5}, {0x18D00, 0x18D08}, {0x1AFF0, 0x1AFF3}, {0x1AFF5, 0x1AFFB},
    {0x1AFFD, 0x1AFFE}, {0x1B000, 0x1B122}, {0x1B132, 0x1B132}, {0x1B150, 0x1B152},
    {0x1B155, 0x1B155}, {0x1B164, 0x1B167}, {0x1B170, 0x1B2FB}, {0x1BC00, 0x1BC6A},
    {0x1BC70, 0x1BC7C}, {0x1BC80, 0x1BC88}, {0x1BC90, 0x1BC99}, {0x1D400, 0x1D454},
    {0x1D456, 0x1D49C}, {0x1D49E, 0x1D49F}, {0x1D4A2, 0x1D4A2}, {0x1D4A5, 0x1D4A6},
    {0x1D4A9, 0x1D4AC}, {0x1D4AE, 0x1D4B9}, {0x1D4BB, 0x1D4BB}, {0x1D4BD, 0x1D4C3},
    {0x1D4C5, 0x1D505}, {0x1D507, 0x1D50A}, {0x1D50D, 0x1D514}, {0x1D516, 0x1D51C},
    {0x1D51E, 0x1D539}, {0x1D53B, 0x1D53E}, {0x1D540, 0x1D544}, {0x1D546, 0x1D546},
    {0x1D54A, 0x1D550}, {0x1D552, 0x1D6A5}, {0x1D6A8, 0x1D6C0}, {0x1D6C2, 0x1D6DA},
    {0x1D6DC, 0x1D6FA}, {0x1D6FC, 0x1D714}, {0x1D716, 0x1D734}, {0x1D736, 0x1D74E},
    {0x1D750, 0x1D76E}, {0x1D770, 0x1D788}, {0x1D78A, 0x1D7A8}, {0x1D7AA, 0x1D7C2},
    {0x1D7C4, 0x1D7CB}, {0x1DF00, 0x1DF1E}, {0x1DF25, 0x1DF2A}, {0x1E030, 0x1E06D},
    {0x1E100, 0x1E12C}, {0x1E137, 0x1E13D}, {0x1E14E, 0x1E14E}, {0x1E290, 0x1E2AD},
    {0x1E2C0, 0x1E2EB}, {0x1E4D0, 0x1E4EB}, {0x1E7E0, 0x1E7E6}, {0x1E7E8, 0x1E7EB},
    {0x1E7ED, 0x1E7EE}, {0x1E7F0, 0x1E7FE}, {0x1E800, 0x1E8C4}, {0x1E900, 0x1E943},
    {0x1E94B, 0x1E94B}, {0x1EE00, 0x1EE03}, {0x1EE05, 0x1EE1F}, {0x1EE21, 0x1EE22},
    {0x1EE24, 0x1EE24}, {0x1EE27, 0x1EE27}, {0x1EE29, 0x1EE32}, {0x1EE34, 0x1EE37},
    {0x1EE39, 0x1EE39}, {0x1EE3B, 0x1EE3B}, {0x1EE42, 0x1EE42}, {0x1EE47, 0x1EE47},
    {0x1EE49, 0x1EE49}, {0x1EE4B, 0x1EE4B}, {0x1EE4D, 0x1EE4F}, {0x1EE51, 0x1EE52},
    {0x1EE54, 0x1EE54}, {0x1EE57, 0x1EE57}, {0x1EE59, 0x1EE59}, {0x1EE5B, 0x1EE5B},
    {0x1EE5D, 0x1EE5D}, {0x1EE5F, 0x1EE5F}, {0x1EE61, 0x1EE62}, {0x1EE64, 0x1EE64},
    {0x1EE67, 0x1EE6A}, {0x1EE6C, 0x1EE72}, {0x1EE74, 0x1EE77}, {0x1EE79, 0x1EE7C},
    {0x1EE7E, 0x1EE7E}, {0x1EE80, 0x1EE89}, {0x1EE8B, 0x1EE9B}, {0x1EEA1, 0x1EEA3},
    {0x1EEA5, 0x1EEA9}, {0x1EEAB, 0x1EEBB}, {0x20000, 0x2A6DF}, {0x2A700, 0x2B739},
    {0x2B740, 0x2B81D}, {0x2B820, 0x2CEA1}, {0x2CEB0, 0x2EBE0}, {0x2EBF0, 0x2EE5D},
    {0x2F800, 0x2FA1D}, {0x30000, 0x3134A}, {0x31350, 0x323AF},
};
/* \p{N}: Nd Nl No: 137 ranges */
static const uint32_t ft__uc_number[137][2] = {
    {0x30, 0x39}, {0xB2, 0xB3}, {0xB9, 0xB9}, {0xBC, 0xBE}, {0x660, 0x669}, {0x6F0, 0x6F9},
    {0x7C0, 0x7C9}, {0x966, 0x96F}, {0x9E6, 0x9EF}, {0x9F4, 0x9F9}, {0xA66, 0xA6F}, {0xAE6, 0xAEF},
    {0xB66, 0xB6F}, {0xB72, 0xB77}, {0xBE6, 0xBF2}, {0xC66, 0xC6F}, {0xC78, 0xC7E}, {0xCE6, 0xCEF},
    {0xD58, 0xD5E}, {0xD66, 0xD78}, {0xDE6, 0xDEF}, {0xE50, 0xE59}, {0xED0, 0xED9}, {0xF20, 0xF33},
    {0x1040, 0x1049}, {0x1090, 0x1099}, {0x1369, 0x137C}, {0x16EE, 0x16F0}, {0x17E0, 0x17E9},
    {0x17F0, 0x17F9}, {0x1810, 0x1819}, {0x1946, 0x194F}, {0x19D0, 0x19DA}, {0x1A80, 0x1A89},
    {0x1A90, 0x1A99}, {0x1B50, 0x1B59}, {0x1BB0, 0x1BB9}, {0x1C40, 0x1C49}, {0x1C50, 0x1C59},
    {0x2070, 0x2070}, {0x2074, 0x2079}, {0x2080, 0x2089}, {0x2150, 0x2182}, {0x2185, 0x2189},
    {0x2460, 0x249B}, {0x24EA, 0x24FF}, {0x2776, 0x2793}, {0x2CFD, 0x2CFD}, {0x3007, 0x3007},
    {0x3021, 0x3029}, {0x3038, 0x303A}, {0x3192, 0x3195}, {0x3220, 0x3229}, {0x3248, 0x324F},
    {0x3251, 0x325F}, {0x3280, 0x3289}, {0x32B1, 0x32BF}, {0xA620, 0xA629}, {0xA6E6, 0xA6EF},
    {0xA830, 0xA835}, {0xA8D0, 0xA8D9}, {0xA900, 0xA909}, {0xA9D0, 0xA9D9}, {0xA9F0, 0xA9F9},
    {0xAA50, 0xAA59}, {0xABF0, 0xABF9}, {0xFF10, 0xFF19}, {0x10107, 0x10133}, {0x10140, 0x10178},
    {0x1018A, 0x1018B}, {0x102E1, 0x102FB}, {0x10320, 0x10323}, {0x10341, 0x10341},
    {0x1034A, 0x1034A}, {0x103D1, 0x103D5}, {0x104A0, 0x104A9}, {0x10858, 0x1085F},
    {0x10879, 0x1087F}, {0x108A7, 0x108AF}, {0x108FB, 0x108FF}, {0x10916, 0x1091B},
    {0x109BC, 0x109BD}, {0x109C0, 0x109CF}, {0x109D2, 0x109FF}, {0x10A40, 0x10A48},
    {0x10A7D, 0x10A7E}, {0x10A9D, 0x10A9F}, {0x10AEB, 0x10AEF}, {0x10B58, 0x10B5F},
    {0x10B78, 0x10B7F}, {0x10BA9, 0x10BAF}, {0x10CFA, 0x10CFF}, {0x10D30, 0x10D39},
    {0x10E60, 0x10E7E}, {0x10F1D, 0x10F26}, {0x10F51, 0x10F54}, {0x10FC5, 0x10FCB},
    {0x11052, 0x1106F}, {0x110F0, 0x110F9}, {0x11136, 0x1113F}, {0x111D0, 0x111D9},
    {0x111E1, 0x111F4}, {0x112F0, 0x112F9}, {0x11450, 0x11459}, {0x114D0, 0x114D9},
    {0x11650, 0x11659}, {0x116C0, 0x116C9}, {0x11730, 0x1173B}, {0x118E0, 0x118F2},
    {0x11950, 0x11959}, {0x11C50, 0x11C6C}, {0x11D50, 0x11D59}, {0x11DA0, 0x11DA9},
    {0x11F50, 0x11F59}, {0x11FC0, 0x11FD4}, {0x12400, 0x1246E}, {0x16A60, 0x16A69},
    {0x16AC0, 0x16AC9}, {0x16B50, 0x16B59}, {0x16B5B, 0x16B61}, {0x16E80, 0x16E96},
    {0x1D2C0, 0x1D2D3}, {0x1D2E0, 0x1D2F3}, {0x1D360, 0x1D378}, {0x1D7CE, 0x1D7FF},
    {0x1E140, 0x1E149}, {0x1E2F0, 0x1E2F9}, {0x1E4F0, 0x1E4F9}, {0x1E8C7, 0x1E8CF},
    {0x1E950, 0x1E959}, {0x1EC71, 0x1ECAB}, {0x1ECAD, 0x1ECAF}, {0x1ECB1, 0x1ECB4},
    {0x1ED01, 0x1ED2D}, {0x1ED2F, 0x1ED3D}, {0x1F100, 0x1F10C}, {0x1FBF0, 0x1FBF9},
};
/* \p{P}: Pc Pd Pe Pf Pi Po Ps: 191 ranges */
static const uint32_t ft__uc_punct[191][2] = {
    {0x21, 0x23}, {0x25, 0x2A}, {0x2C, 0x2F}, {0x3A, 0x3B}, {0x3F, 0x40}, {0x5B, 0x5D},
    {0x5F, 0x5F}, {0x7B, 0x7B}, {0x7D, 0x7D}, {0xA1, 0xA1}, {0xA7, 0xA7}, {0xAB, 0xAB},
    {0xB6, 0xB7}, {0xBB, 0xBB}, {0xBF, 0xBF}, {0x37E, 0x37E}, {0x387, 0x387}, {0x55A, 0x55F},
    {0x589, 0x58A}, {0x5BE, 0x5BE}, {0x5C0, 0x5C0}, {0x5C3, 0x5C3}, {0x5C6, 0x5C6}, {0x5F3, 0x5F4},
    {0x609, 0x60A}, {0x60C, 0x60D}, {0x61B, 0x61B}, {0x61D, 0x61F}, {0x66A, 0x66D}, {0x6D4, 0x6D4},
    {0x700, 0x70D}, {0x7F7, 0x7F9}, {0x830, 0x83E}, {0x85E, 0x85E}, {0x964, 0x965}, {0x970, 0x970},
    {0x9FD, 0x9FD}, {0xA76, 0xA76}, {0xAF0, 0xAF0}, {0xC77, 0xC77}, {0xC84, 0xC84}, {0xDF4, 0xDF4},
    {0xE4F, 0xE4F}, {0xE5A, 0xE5B}, {0xF04, 0xF12}, {0xF14, 0xF14}, {0xF3A, 0xF3D}, {0xF85, 0xF85},
    {0xFD0, 0xFD4}, {0xFD9, 0xFDA}, {0x104A, 0x104F}, {0x10FB, 0x10FB}, {0x1360, 0x1368},
    {0x1400, 0x1400}, {0x166E, 0x166E}, {0x169B, 0x169C}, {0x16EB, 0x16ED}, {0x1735, 0x1736},
    {0x17D4, 0x17D6}, {0x17D8, 0x17DA}, {0x1800, 0x180A}, {0x1944, 0x1945}, {0x1A1E, 0x1A1F},
    {0x1AA0, 0x1AA6}, {0x1AA8, 0x1AAD}, {0x1B5A, 0x1B60}, {0x1B7D, 0x1B7E}, {0x1BFC, 0x1BFF},
    {0x1C3B, 0x1C3F}, {0x1C7E, 0x1C7F}, {0x1CC0, 0x1CC7}, {0x1CD3, 0x1CD3}, {0x2010, 0x2027},
    {0x2030, 0x2043}, {0x2045, 0x2051}, {0x2053, 0x205E}, {0x207D, 0x207E}, {0x208D, 0x208E},
    {0x2308, 0x230B}, {0x2329, 0x232A}, {0x2768, 0x2775}, {0x27C5, 0x27C6}, {0x27E6, 0x27EF},
    {0x2983, 0x2998}, {0x29D8, 0x29DB}, {0x29FC, 0x29FD}, {0x2CF9, 0x2CFC}, {0x2CFE, 0x2CFF},
    {0x2D70, 0x2D70}, {0x2E00, 0x2E2E}, {0x2E30, 0x2E4F}, {0x2E52, 0x2E5D}, {0x3001, 0x3003},
    {0x3008, 0x3011}, {0x3014, 0x301F}, {0x3030, 0x3030}, {0x303D, 0x303D}, {0x30A0, 0x30A0},
    {0x30FB, 0x30FB}, {0xA4FE, 0xA4FF}, {0xA60D, 0xA60F}, {0xA673, 0xA673}, {0xA67E, 0xA67E},
    {0xA6F2, 0xA6F7}, {0xA874, 0xA877}, {0xA8CE, 0xA8CF}, {0xA8F8, 0xA8FA}, {0xA8FC, 0xA8FC},
    {0xA92E, 0xA92F}, {0xA95F, 0xA95F}, {0xA9C1, 0xA9CD}, {0xA9DE, 0xA9DF}, {0xAA5C, 0xAA5F},
    {0xAADE, 0xAADF}, {0xAAF0, 0xAAF1}, {0xABEB, 0xABEB}, {0xFD3E, 0xFD3F}, {0xFE10, 0xFE19},
    {0xFE30, 0xFE52}, {0xFE54, 0xFE61}, {0xFE63, 0xFE63}, {0xFE68, 0xFE68}, {0xFE6A, 0xFE6B},
    {0xFF01, 0xFF03}, {0xFF05, 0xFF0A}, {0xFF0C, 0xFF0F}, {0xFF1A, 0xFF1B}, {0xFF1F, 0xFF20},
    {0xFF3B, 0xFF3D}, {0xFF3F, 0xFF3F}, {0xFF5B, 0xFF5B}, {0xFF5D, 0xFF5D}, {0xFF5F, 0xFF65},
    {0x10100, 0x10102}, {0x1039F, 0x1039F}, {0x103D0, 0x103D0}, {0x1056F, 0x1056F},
    {0x10857, 0x10857}, {0x1091F, 0x1091F}, {0x1093F, 0x1093F}, {0x10A50, 0x10A58},
    {0x10A7F, 0x10A7F}, {0x10AF0, 0x10AF6}, {0x10B39, 0x10B3F}, {0x10B99, 0x10B9C},
    {0x10EAD, 0x10EAD}, {0x10F55, 0x10F59}, {0x10F86, 0x10F89}, {0x11047, 0x1104D},
    {0x110BB, 0x110BC}, {0x110BE, 0x110C1}, {0x11140, 0x11143}, {0x11174, 0x11175},
    {0x111C5, 0x111C8}, {0x111CD, 0x111CD}, {0x111DB, 0x111DB}, {0x111DD, 0x111DF},
    {0x11238, 0x1123D}, {0x112A9, 0x112A9}, {0x1144B, 0x1144F}, {0x1145A, 0x1145B},
    {0x1145D, 0x1145D}, {0x114C6, 0x114C6}, {0x115C1, 0x115D7}, {0x11641, 0x11643},
    {0x11660, 0x1166C}, {0x116B9, 0x116B9}, {0x1173C, 0x1173E}, {0x1183B, 0x1183B},
    {0x11944, 0x11946}, {0x119E2, 0x119E2}, {0x11A3F, 0x11A46}, {0x11A9A, 0x11A9C},
    {0x11A9E, 0x11AA2}, {0x11B00, 0x11B09}, {0x11C41, 0x11C45}, {0x11C70, 0x11C71},
    {0x11EF7, 0x11EF8}, {0x11F43, 0x11F4F}, {0x11FFF, 0x11FFF}, {0x12470, 0x12474},
    {0x12FF1, 0x12FF2}, {0x16A6E, 0x16A6F}, {0x16AF5, 0x16AF5}, {0x16B37, 0x16B3B},
    {0x16B44, 0x16B44}, {0x16E97, 0x16E9A}, {0x16FE2, 0x16FE2}, {0x1BC9F, 0x1BC9F},
    {0x1DA87, 0x1DA8B}, {0x1E95E, 0x1E95F},
};
/* \s: the White_Space property, 25 code points */
static const uint32_t ft__uc_space[25] = {
    0x9, 0xA, 0xB, 0xC, 0xD, 0x20, 0x85, 0xA0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000
};
/* flags of the ASCII code points: 1 \p{L}, 2 \p{N}, 4 \p{P}, 8 \s */
static const unsigned char ft__uc_ascii[128] = {
    0,0,0,0,0,0,0,0,0,8,8,8,8,8,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
    8,4,4,4,0,4,4,4,4,4,4,0,4,4,4,4,2,2,2,2,2,2,2,2,2,2,4,4,0,0,0,4,
    4,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,4,4,4,0,4,
    0,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,4,0,4,0,0,
};

enum { FT__UC_L = 1, FT__UC_N = 2, FT__UC_P = 4, FT__UC_WS = 8, FT__UC_ANY = 16 };

static int ft__uc_in(const uint32_t (*r)[2], int n, uint32_t cp) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) >> 1;
        if (cp < r[mid][0]) hi = mid - 1;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

/* FT__UC_* bits of a code point; FT__UC_ANY marks "a code point" (llama.cpp's flags are never
   0 inside a word, and 0 past its end: the matchers below rely on that difference) */
static unsigned ft__uc_flags(uint32_t cp) {
    unsigned f = FT__UC_ANY;
    int lo = 0, hi = (int)(sizeof ft__uc_space / sizeof ft__uc_space[0]) - 1;
    if (cp < 128) return f | ft__uc_ascii[cp];
#define FT__NR(t) ((int)(sizeof t / sizeof t[0]))
    if (ft__uc_in(ft__uc_letter, FT__NR(ft__uc_letter), cp)) f |= FT__UC_L;
    else if (ft__uc_in(ft__uc_number, FT__NR(ft__uc_number), cp)) f |= FT__UC_N;
    else if (ft__uc_in(ft__uc_punct, FT__NR(ft__uc_punct), cp)) f |= FT__UC_P;
#undef FT__NR
    while (lo <= hi) {                                   /* \s: 25 code points */
        int mid = (lo + hi) >> 1;
        if (cp < ft__uc_space[mid]) hi = mid - 1;
        else if (cp > ft__uc_space[mid]) lo = mid + 1;
        else { f |= FT__UC_WS; break; }
    }
    return f;
}

/* One code point from s[*i..n) read as llama.cpp's unicode_cpts_from_utf8 reads it: a byte that
   starts no valid sequence becomes U+FFFD and is skipped alone; overlong forms and surrogates
   are taken as they are (llama.cpp does not check them). Values past U+10FFFF, which llama.cpp
   cannot encode again (it throws), become U+FFFD here. */
static uint32_t ft__utf8_next(const unsigned char *s, size_t n, size_t *i) {
    size_t o = *i;
    unsigned c = s[o];
    uint32_t cp;
    if (!(c & 0x80)) { *i = o + 1; return c; }
    if (!(c & 0x40)) goto bad;
    if (!(c & 0x20)) {
        if (o + 1 >= n || (s[o + 1] & 0xC0) != 0x80) goto bad;
        *i = o + 2;
        return ((uint32_t)(c & 0x1F) << 6) | (s[o + 1] & 0x3F);
    }
    if (!(c & 0x10)) {
        if (o + 2 >= n || (s[o + 1] & 0xC0) != 0x80 || (s[o + 2] & 0xC0) != 0x80) goto bad;
        *i = o + 3;
        return ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[o + 1] & 0x3F) << 6) | (s[o + 2] & 0x3F);
    }
    if (!(c & 0x08)) {
        if (o + 3 >= n || (s[o + 1] & 0xC0) != 0x80 || (s[o + 2] & 0xC0) != 0x80 || (s[o + 3] & 0xC0) != 0x80) goto bad;
        *i = o + 4;
        cp = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[o + 1] & 0x3F) << 12) | ((uint32_t)(s[o + 2] & 0x3F) << 6) | (s[o + 3] & 0x3F);
        return cp <= 0x10FFFF ? cp : 0xFFFD;
    }
bad:
    *i = o + 1;
    return 0xFFFD;
}

static int ft__utf8_put(unsigned char *d, uint32_t cp) {   /* cp <= 0x10FFFF; returns bytes */
    if (cp < 0x80) { d[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) { d[0] = (unsigned char)(0xC0 | (cp >> 6)); d[1] = (unsigned char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        d[0] = (unsigned char)(0xE0 | (cp >> 12)); d[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        d[2] = (unsigned char)(0x80 | (cp & 0x3F)); return 3;
    }
    d[0] = (unsigned char)(0xF0 | (cp >> 18)); d[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    d[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F)); d[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* GPT-2's byte -> "byte character": printable Latin-1 bytes stand for themselves, the other 68
   (controls, space, 0x7F-0xA0, 0xAD) become U+0100.. in byte order, so every token is text */
static uint32_t ft__byte_cp(unsigned b) {
    unsigned n = 0, c;
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) return b;
    for (c = 0; c < b; c++)
        if (!((c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || c >= 0xAE)) n++;
    return 256 + n;
}
static int ft__cp_byte(uint32_t cp) {                     /* the inverse; -1: not a byte char */
    unsigned b;
    if (cp < 256) return ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || cp >= 0xAE) ? (int)cp : -1;
    if (cp >= 256 + 68) return -1;
    for (b = 0; b < 256; b++) if (ft__byte_cp(b) == cp) return (int)b;
    return -1;
}

/* ---- the tokenizer ------------------------------------------------------------------------- */
enum { FT__PRE_DEFAULT, FT__PRE_GPT2, FT__PRE_SMOLLM, FT__PRE_LLAMA3, FT__PRE_QWEN2 };

struct ft_tokenizer {
    ft_tokenizer_kind kind;
    int pre;                        /* FT__PRE_*                                              */
    int ignore_merges;              /* llama3: a word that is a token is taken whole           */
    int clean_spaces;               /* decode: " ," -> "," etc. (llama.cpp's clean_spaces)     */
    int add_bos, add_eos, add_space_prefix;
    int32_t bos, eos, unk, pad;
    int64_t n_vocab;
    char *text;                     /* every token's text, back to back                       */
    uint64_t *off;                  /* n_vocab + 1 offsets into text                          */
    int32_t *type;                  /* FT__TT_*                                               */
    float *score;                   /* SentencePiece scores (0 when absent)                   */
    char *piece; uint64_t *piece_off;   /* decoded bytes of every token (llama.cpp's cache)   */
    int32_t *tok_slot; uint64_t tok_mask;               /* text -> id, open addressing       */
    uint64_t *mkey; int32_t *mrank, *mres; uint64_t mmask;  /* (left, right) -> rank, result */
    int32_t byte_tok[256];          /* gpt2: token of each byte char; llama: <0xXX> fallback   */
    int32_t *special; int64_t n_special;   /* control/user/unknown ids, longest text first    */
    int32_t stops[8]; int n_stops;  /* finetune.stop_token_ids (a [hf] generation_config.json's) */
};

static uint64_t ft__fnv1a(const void *p, size_t n, uint64_t h) {
    const unsigned char *s = FT__CAST(const unsigned char *, p);
    size_t i;
    for (i = 0; i < n; i++) { h ^= s[i]; h *= ((uint64_t)0x100u << 32) | 0x1B3u; }  /* FNV prime */
    return h;
}
#define FT__FNV_BASIS (((uint64_t)0xCBF29CE4u << 32) | 0x84222325u)

static int32_t ft__tok_lookup(const ft_tokenizer *t, const void *s, size_t n) {
    uint64_t i = ft__fnv1a(s, n, FT__FNV_BASIS) & t->tok_mask;
    for (;; i = (i + 1) & t->tok_mask) {
        int32_t id = t->tok_slot[i];
        if (id < 0) return -1;
        if (t->off[id + 1] - t->off[id] == n && memcmp(t->text + t->off[id], s, n) == 0) return id;
    }
}

static uint64_t ft__merge_slot(const ft_tokenizer *t, uint64_t key) {
    uint64_t i = ft__fnv1a(&key, sizeof key, FT__FNV_BASIS) & t->mmask;
    while (t->mkey[i] != key && t->mkey[i] != ~(uint64_t)0) i = (i + 1) & t->mmask;
    return i;
}
static int32_t ft__merge_rank(const ft_tokenizer *t, int32_t a, int32_t b, int32_t *res) {
    uint64_t i;
    if (a < 0 || b < 0 || !t->mkey) return -1;
    i = ft__merge_slot(t, ((uint64_t)(uint32_t)a << 32) | (uint32_t)b);
    if (t->mkey[i] == ~(uint64_t)0) return -1;
    *res = t->mres[i];
    return t->mrank[i];
}

FT_API void ft_tokenizer_free(ft_tokenizer *t) {
    if (!t) return;
    FT_FREE(t->text); FT_FREE(t->off); FT_FREE(t->type); FT_FREE(t->score);
    FT_FREE(t->piece); FT_FREE(t->piece_off); FT_FREE(t->tok_slot);
    FT_FREE(t->mkey); FT_FREE(t->mrank); FT_FREE(t->mres); FT_FREE(t->special);
    FT_FREE(t);
}

static int ft__cmp_u64(const void *a, const void *b) {
    uint64_t x = *FT__CAST(const uint64_t *, a), y = *FT__CAST(const uint64_t *, b);
    return x < y ? -1 : x > y;
}

/* the pre-tokenizer names of llama.cpp's llama_vocab::impl::load that use the regexes here */
static int ft__pre_from_name(const char *pre, int *ignore_merges, int *clean_spaces) {
    static const char *const llama3[] = {"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral",
                                         "midm-2.0", "lfm2", "jina-v5-nano", "dbrx", "smaug-bpe", NULL};
    static const char *const smollm[] = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone",
                                         "minerva-7b", "mellum2", NULL};
    static const char *const gpt2[] = {"gpt2", "gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es",
                                       "jina-v2-de", "a.x-4.0", "mellum", "modern-bert", "mpt", "olmo", "jais",
                                       "trillion", "granite-docling", "exaone4", "jina-v1-en", "jina-v2-code",
                                       "roberta-bpe", NULL};
    static const char *const qwen2[] = {"qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2",
                                        "hunyuan", "solar-open", "trillion", "granite-docling", NULL};
    /* names whose clean_spaces llama.cpp turns off */
    static const char *const noclean[] = {"smollm", "command-r", "qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2",
                                          "hunyuan", "solar-open", "trillion", "granite-docling", NULL};
    int i;
    *ignore_merges = 0; *clean_spaces = 1;
    if (!pre) return FT__PRE_DEFAULT;
    for (i = 0; noclean[i]; i++) if (!strcmp(pre, noclean[i])) *clean_spaces = 0;
    for (i = 0; llama3[i]; i++) if (!strcmp(pre, llama3[i])) { *ignore_merges = i < 9; return FT__PRE_LLAMA3; }
    for (i = 0; smollm[i]; i++) if (!strcmp(pre, smollm[i])) return FT__PRE_SMOLLM;
    for (i = 0; gpt2[i]; i++) if (!strcmp(pre, gpt2[i])) return FT__PRE_GPT2;
    for (i = 0; qwen2[i]; i++) if (!strcmp(pre, qwen2[i])) return FT__PRE_QWEN2;
    return FT__PRE_DEFAULT;   /* "default", "" and names this file does not know */
}

/* llama.cpp's llama_decode_text: byte chars back to bytes; a code point that is no byte char
   gives "[UNK_BYTE_0x<its utf-8 in hex><the whole token text>]" as llama.cpp writes it */
static size_t ft__bpe_decode(const char *s, size_t n, char *dst) {
    size_t i = 0, k = 0, j;
    while (i < n) {
        size_t i0 = i;
        uint32_t cp = ft__utf8_next(FT__CAST(const unsigned char *, s), n, &i);
        int b = ft__cp_byte(cp);
        if (b >= 0) { if (dst) dst[k] = (char)b; k++; continue; }
        {
            unsigned char u[4]; int m = ft__utf8_put(u, cp);
            static const char hx[] = "0123456789abcdef";
            (void)i0;
            if (dst) memcpy(dst + k, "[UNK_BYTE_0x", 12);
            k += 12;
            for (j = 0; j < (size_t)m; j++) { if (dst) { dst[k] = hx[u[j] >> 4]; dst[k + 1] = hx[u[j] & 15]; } k += 2; }
            if (dst) memcpy(dst + k, s, n);
            k += n;
            if (dst) dst[k] = ']';
            k++;
        }
    }
    return k;
}

/* one token's piece with special = true (token_to_piece of llama.cpp); dst NULL: only count */
static size_t ft__make_piece(const ft_tokenizer *t, int32_t id, char *dst) {
    const char *s = t->text + t->off[id];
    size_t n = (size_t)(t->off[id + 1] - t->off[id]), i, k;
    int ty = t->type[id];
    if (ty == FT__TT_UNKNOWN || ty == FT__TT_CONTROL || ty == FT__TT_USER) { if (dst) memcpy(dst, s, n); return n; }
    if (ty == FT__TT_NORMAL) {
        if (t->kind == FT_TOKENIZER_BPE_GPT2) return ft__bpe_decode(s, n, dst);
        for (i = 0, k = 0; i < n; ) {                         /* SentencePiece: U+2581 -> ' ' */
            if (i + 3 <= n && (unsigned char)s[i] == 0xE2 && (unsigned char)s[i + 1] == 0x96 && (unsigned char)s[i + 2] == 0x81) {
                if (dst) dst[k] = ' ';
                k++; i += 3;
            } else { if (dst) dst[k] = s[i]; k++; i++; }
        }
        return k;
    }
    if (ty == FT__TT_BYTE) {                                  /* "<0xXX>": strtol of text[3..5) */
        unsigned v = 0;
        for (i = 3; i < 5 && i < n; i++) {
            char c = s[i];
            int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
            if (d < 0) break;
            v = v * 16 + (unsigned)d;
        }
        if (dst) dst[0] = (char)v;
        return 1;
    }
    return 0;                                                 /* unused / undefined: nothing */
}

/* the token texts (an empty text becomes "[EMPTY_<id>]" as llama.cpp renames it), types, scores
   and the text -> id hash; a text twice is an error (llama.cpp asserts on it too) */
static ft_result ft__tok_texts(ft_tokenizer *t, const char *const *tokens, const uint64_t *tok_len, const int32_t *types, const float *scores) {
    uint64_t total = 0, cap; int64_t k, n_vocab = t->n_vocab;
    char emptyname[32];
    for (k = 0; k < n_vocab; k++) {
        uint64_t n = tok_len ? tok_len[k] : (tokens[k] ? strlen(tokens[k]) : 0);
        if ((n && !tokens[k]) || n >= INT32_MAX) return ft_set_error(FT_ERR_FORMAT, "tokenizer: token %lld has no text or %llu bytes", (long long)k, (unsigned long long)n);
        total += n ? n : (uint64_t)snprintf(emptyname, sizeof emptyname, "[EMPTY_%lld]", (long long)k);
    }
    t->text = FT__CAST(char *, FT_MALLOC(total + 1));
    t->off = FT__CAST(uint64_t *, FT_MALLOC(((size_t)n_vocab + 1) * sizeof(uint64_t)));
    t->type = FT__CAST(int32_t *, FT_MALLOC((size_t)n_vocab * sizeof(int32_t)));
    t->score = FT__CAST(float *, FT_MALLOC((size_t)n_vocab * sizeof(float)));
    for (cap = 16; cap < (uint64_t)n_vocab * 2; cap <<= 1) {}
    t->tok_slot = FT__CAST(int32_t *, FT_MALLOC((size_t)cap * sizeof(int32_t)));
    if (!t->text || !t->off || !t->type || !t->score || !t->tok_slot) return ft_set_error(FT_ERR_NOMEM, "tokenizer: out of memory");
    t->tok_mask = cap - 1;
    memset(t->tok_slot, 0xFF, (size_t)cap * sizeof(int32_t));
    for (k = 0, total = 0; k < n_vocab; k++) {
        uint64_t n = tok_len ? tok_len[k] : (tokens[k] ? strlen(tokens[k]) : 0), h;
        t->off[k] = total;
        if (n) memcpy(t->text + total, tokens[k], (size_t)n);
        else n = (uint64_t)snprintf(t->text + total, sizeof emptyname, "[EMPTY_%lld]", (long long)k);
        total += n;
        t->type[k] = types ? types[k] : FT__TT_NORMAL;
        t->score[k] = scores ? scores[k] : 0.0f;
        t->off[k + 1] = total;
        for (h = ft__fnv1a(t->text + t->off[k], (size_t)n, FT__FNV_BASIS) & t->tok_mask;; h = (h + 1) & t->tok_mask) {
            int32_t o = t->tok_slot[h];
            if (o < 0) { t->tok_slot[h] = (int32_t)k; break; }
            if (t->off[o + 1] - t->off[o] == n && memcmp(t->text + t->off[o], t->text + t->off[k], (size_t)n) == 0)
                return ft_set_error(FT_ERR_FORMAT, "tokenizer: token %lld has the same text as token %d", (long long)k, (int)o);
        }
    }
    return FT_OK;
}
/* one merge "a b" -> rank k; the first of duplicates wins (llama.cpp's map emplace) */
static ft_result ft__tok_merge(ft_tokenizer *t, int64_t k, const char *m, size_t n) {
    size_t sp; int32_t a, b, res; uint64_t slot; char *cat;
    for (sp = 1; sp < n && m[sp] != ' '; sp++) {}
    if (sp >= n) return ft_set_error(FT_ERR_FORMAT, "tokenizer: merge %lld (\"%.*s\") is not \"left right\"", (long long)k, (int)FT__MIN(n, 64), m ? m : "");
    a = ft__tok_lookup(t, m, sp);
    b = ft__tok_lookup(t, m + sp + 1, n - sp - 1);
    cat = FT__CAST(char *, FT_MALLOC(n));
    if (!cat) return ft_set_error(FT_ERR_NOMEM, "tokenizer: out of memory");
    memcpy(cat, m, sp);
    memcpy(cat + sp, m + sp + 1, n - sp - 1);
    res = ft__tok_lookup(t, cat, n - 1);
    FT_FREE(cat);
    if (a < 0 || b < 0 || res < 0)
        return ft_set_error(FT_ERR_FORMAT, "tokenizer: merge %lld (\"%.*s\"): %s is not a token", (long long)k, (int)FT__MIN(n, 64), m,
                            a < 0 ? "the left part" : b < 0 ? "the right part" : "the merged text");
    slot = ft__merge_slot(t, ((uint64_t)(uint32_t)a << 32) | (uint32_t)b);
    if (t->mkey[slot] != ~(uint64_t)0) return FT_OK;
    t->mkey[slot] = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    t->mrank[slot] = (int32_t)k;
    t->mres[slot] = res;
    return FT_OK;
}
static ft_result ft__tok_merges(ft_tokenizer *t, int64_t n_merges, const char *const *merges, const uint64_t *merge_len) {
    uint64_t cap; int64_t k; ft_result r = FT_OK;
    for (cap = 16; cap < (uint64_t)n_merges * 2; cap <<= 1) {}
    t->mkey = FT__CAST(uint64_t *, FT_MALLOC((size_t)cap * sizeof(uint64_t)));
    t->mrank = FT__CAST(int32_t *, FT_MALLOC((size_t)cap * sizeof(int32_t)));
    t->mres = FT__CAST(int32_t *, FT_MALLOC((size_t)cap * sizeof(int32_t)));
    if (!t->mkey || !t->mrank || !t->mres || n_merges >= INT32_MAX) return ft_set_error(FT_ERR_NOMEM, "tokenizer: out of memory for %lld merges", (long long)n_merges);
    t->mmask = cap - 1;
    memset(t->mkey, 0xFF, (size_t)cap * sizeof(uint64_t));
    for (k = 0; k < n_merges && r == FT_OK; k++) {
        const char *m = merges[k];
        r = ft__tok_merge(t, k, m, m ? (merge_len ? (size_t)merge_len[k] : strlen(m)) : 0);
    }
    return r;
}
/* byte tokens: gpt2 maps byte b to its byte char; llama looks for "<0xXX>", then the byte itself,
   then falls back to the unknown token (where llama.cpp would throw) */
static void ft__tok_bytes(ft_tokenizer *t) {
    static const char hx[] = "0123456789ABCDEF";
    int i;
    for (i = 0; i < 256; i++) {
        unsigned char u[4]; char b6[6];
        if (t->kind == FT_TOKENIZER_BPE_GPT2) {
            int m = ft__utf8_put(u, ft__byte_cp((unsigned)i));
            t->byte_tok[i] = ft__tok_lookup(t, u, (size_t)m);
            continue;
        }
        b6[0] = '<'; b6[1] = '0'; b6[2] = 'x'; b6[3] = hx[i >> 4]; b6[4] = hx[i & 15]; b6[5] = '>';
        t->byte_tok[i] = ft__tok_lookup(t, b6, 6);
        u[0] = (unsigned char)i;
        if (t->byte_tok[i] < 0) t->byte_tok[i] = ft__tok_lookup(t, u, 1);
        if (t->byte_tok[i] < 0) t->byte_tok[i] = t->unk;
    }
}
/* the special tokens for the partition step, longest text first as llama.cpp sorts them; ties
   by id (llama.cpp's std::sort leaves their order unspecified). Keys (~length << 32 | id) sort
   with a context-free qsort. */
static ft_result ft__tok_specials(ft_tokenizer *t) {
    int64_t k; uint64_t *key;
#define FT__IS_SPECIAL(ty) ((ty) == FT__TT_CONTROL || (ty) == FT__TT_USER || (ty) == FT__TT_UNKNOWN)
    for (k = 0; k < t->n_vocab; k++) t->n_special += FT__IS_SPECIAL(t->type[k]);
    t->special = FT__CAST(int32_t *, FT_MALLOC((size_t)FT__MAX(t->n_special, 1) * sizeof(int32_t)));
    key = FT__CAST(uint64_t *, FT_MALLOC((size_t)FT__MAX(t->n_special, 1) * sizeof(uint64_t)));
    if (!t->special || !key) { FT_FREE(key); return ft_set_error(FT_ERR_NOMEM, "tokenizer: out of memory"); }
    for (k = 0, t->n_special = 0; k < t->n_vocab; k++)
        if (FT__IS_SPECIAL(t->type[k])) t->special[t->n_special++] = (int32_t)k;
#undef FT__IS_SPECIAL
    for (k = 0; k < t->n_special; k++) {
        int32_t id = t->special[k];
        key[k] = ((uint64_t)(0xFFFFFFFFu - (uint32_t)(t->off[id + 1] - t->off[id])) << 32) | (uint32_t)id;
    }
    qsort(key, (size_t)t->n_special, sizeof(uint64_t), ft__cmp_u64);
    for (k = 0; k < t->n_special; k++) t->special[k] = (int32_t)(key[k] & 0xFFFFFFFFu);
    FT_FREE(key);
    return FT_OK;
}
/* decoded pieces, computed once (llama.cpp's cache_token_to_piece) */
static ft_result ft__tok_pieces(ft_tokenizer *t) {
    uint64_t pbytes = 0; int64_t k;
    t->piece_off = FT__CAST(uint64_t *, FT_MALLOC(((size_t)t->n_vocab + 1) * sizeof(uint64_t)));
    if (!t->piece_off) return ft_set_error(FT_ERR_NOMEM, "tokenizer: out of memory");
    for (k = 0; k < t->n_vocab; k++) {
        t->piece_off[k] = pbytes;
        pbytes += ft__make_piece(t, (int32_t)k, NULL);
    }
    t->piece_off[t->n_vocab] = pbytes;
    t->piece = FT__CAST(char *, FT_MALLOC((size_t)pbytes + 1));
    if (!t->piece) return ft_set_error(FT_ERR_NOMEM, "tokenizer: out of memory");
    for (k = 0; k < t->n_vocab; k++) ft__make_piece(t, (int32_t)k, t->piece + t->piece_off[k]);
    return FT_OK;
}
/* the model's defaults for what the GGUF leaves out (-1) */
static void ft__tok_flags(ft_tokenizer *t, const char *pre, int add_bos, int add_eos, int add_space_prefix) {
    if (t->kind == FT_TOKENIZER_BPE_GPT2) {
        t->pre = ft__pre_from_name(pre, &t->ignore_merges, &t->clean_spaces);
        t->add_bos = add_bos >= 0 ? add_bos : t->ignore_merges;   /* the llama3 names set add_bos */
        t->add_space_prefix = add_space_prefix > 0;
    } else {                                   /* SentencePiece defaults of llama.cpp          */
        t->pre = FT__PRE_DEFAULT;
        t->clean_spaces = 0;
        t->add_bos = add_bos >= 0 ? add_bos : 1;
        t->add_space_prefix = add_space_prefix >= 0 ? add_space_prefix : 1;
    }
    t->add_eos = add_eos > 0;
}

/* tokens[i] has tok_len[i] bytes (tok_len NULL: NUL-terminated); types NULL: all normal; scores
   may be NULL; merges "left right" (gpt2 only; merge_len NULL: NUL-terminated); bos/eos/unk/pad
   an id or -1; add_bos, add_eos, add_space_prefix: 0/1, or -1 for the model's default (the GGUF
   has no such key). Fails with FT_ERR_FORMAT on malformed vocabularies: duplicate token texts,
   merges without a space, merges of texts that are not tokens or whose result is not a token. */
static FT__MAYBE_UNUSED ft_result ft__tokenizer_init(ft_tokenizer **out, ft_tokenizer_kind kind, const char *pre,
        int64_t n_vocab, const char *const *tokens, const uint64_t *tok_len, const int32_t *types,
        const float *scores, int64_t n_merges, const char *const *merges, const uint64_t *merge_len,
        int32_t bos, int32_t eos, int32_t unk, int32_t pad, int add_bos, int add_eos, int add_space_prefix) {
    static const char *const nm[4] = {"bos", "eos", "unknown", "padding"};
    const int32_t sp[4] = {bos, eos, unk, pad};
    ft_tokenizer *t; ft_result r; int j;
    if (!out) return ft_set_error(FT_ERR_INVALID, "tokenizer: no output pointer");
    *out = NULL;
    if (kind != FT_TOKENIZER_BPE_GPT2 && kind != FT_TOKENIZER_SPM)
        return ft_set_error(FT_ERR_UNSUPPORTED, "tokenizer: model kind %d is not gpt2 or llama", (int)kind);
    if (n_vocab < 1 || n_vocab >= INT32_MAX || !tokens)
        return ft_set_error(FT_ERR_FORMAT, "tokenizer: vocabulary of %lld tokens", (long long)n_vocab);
    if (n_merges < 0 || (n_merges > 0 && !merges))
        return ft_set_error(FT_ERR_FORMAT, "tokenizer: %lld merges", (long long)n_merges);
    for (j = 0; j < 4; j++)
        if (sp[j] < -1 || sp[j] >= n_vocab)
            return ft_set_error(FT_ERR_FORMAT, "tokenizer: %s token id %d outside the vocabulary of %lld", nm[j], (int)sp[j], (long long)n_vocab);
    t = FT__CAST(ft_tokenizer *, FT_MALLOC(sizeof *t));
    if (!t) return ft_set_error(FT_ERR_NOMEM, "tokenizer: out of memory");
    memset(t, 0, sizeof *t);
    t->kind = kind;
    t->n_vocab = n_vocab;
    t->bos = bos; t->eos = eos; t->unk = unk; t->pad = pad;
    ft__tok_flags(t, pre, add_bos, add_eos, add_space_prefix);
    r = ft__tok_texts(t, tokens, tok_len, types, scores);
    if (r == FT_OK && kind == FT_TOKENIZER_BPE_GPT2 && n_merges > 0) r = ft__tok_merges(t, n_merges, merges, merge_len);
    if (r == FT_OK) ft__tok_bytes(t);
    if (r == FT_OK) r = ft__tok_specials(t);
    if (r == FT_OK) r = ft__tok_pieces(t);
    if (r != FT_OK) { ft_tokenizer_free(t); return r; }
    *out = t;
    return FT_OK;
}

FT_API int32_t ft_tokenizer_bos(const ft_tokenizer *t) { return t ? t->bos : -1; }
FT_API int32_t ft_tokenizer_eos(const ft_tokenizer *t) { return t ? t->eos : -1; }
FT_API int ft_tokenizer_stop_ids(const ft_tokenizer *t, int32_t *stop) {
    static const char *const turn_end[4] = {"<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>"};
    int n = 0, i, k;
    if (!t) return 0;
    if (t->eos >= 0) stop[n++] = t->eos;
    for (i = 0; i < 4 + t->n_stops; i++) {
        int32_t id = i < 4 ? ft_tokenizer_find(t, turn_end[i]) : t->stops[i - 4];
        for (k = 0; k < n && id >= 0; k++) if (stop[k] == id) id = -1;
        if (id >= 0) stop[n++] = id;
    }
    return n;
}
FT_API int32_t ft_tokenizer_pad(const ft_tokenizer *t) { return t ? t->pad : -1; }
FT_API int64_t ft_tokenizer_n_vocab(const ft_tokenizer *t) { return t ? t->n_vocab : 0; }
FT_API int32_t ft_tokenizer_find(const ft_tokenizer *t, const char *text) {
    return t && text ? ft__tok_lookup(t, text, strlen(text)) : -1;
}

/* ---- encoding -------------------------------------------------------------------------------- */
/* scratch of one ft_tokenize call, grown on demand */
typedef struct ft__tsym { int32_t id, prev, next; int64_t start, len; } ft__tsym;   /* a symbol */
typedef struct ft__tpair { double key; int32_t left, right, res; int64_t size; } ft__tpair;
typedef struct ft__tws {
    int32_t *ids; int64_t n, cap;         /* output                                             */
    uint32_t *cp; unsigned char *fl;      /* code points of a fragment and their FT__UC_* flags */
    int64_t *w0, *w1;                     /* word lengths (in code points) between passes      */
    unsigned char *buf; int64_t buf_cap;  /* bytes of a word                                    */
    ft__tsym *sym; int64_t sym_cap;
    ft__tpair *heap; int64_t heap_n, heap_cap;
    int oom;
} ft__tws;

static void ft__tws_emit(ft__tws *w, int32_t id) {
    if (w->n < w->cap) w->ids[w->n] = id;
    w->n++;
}
static int ft__tws_grow(void **p, int64_t *cap, int64_t need, size_t elem) {
    int64_t nc;
    void *q;
    if (need <= *cap) return 1;
    nc = FT__MAX(need, *cap * 2);
    q = FT_REALLOC(*p, (size_t)nc * elem);
    if (!q) return 0;
    *p = q; *cap = nc;
    return 1;
}

/* min-heap of candidate merges: smallest key first, then leftmost. key = rank (gpt2) or
   -score (llama), which is the order of llama.cpp's priority queues */
static void ft__heap_push(ft__tws *w, double key, int32_t left, int32_t right, int32_t res, int64_t size) {
    ft__tpair *h;
    int64_t i;
    if (!ft__tws_grow(FT__CAST(void **, &w->heap), &w->heap_cap, w->heap_n + 1, sizeof(ft__tpair))) { w->oom = 1; return; }
    h = w->heap;
    i = w->heap_n++;
    while (i > 0) {
        int64_t p = (i - 1) / 2;
        if (h[p].key < key || (h[p].key == key && h[p].left <= left)) break;
        h[i] = h[p]; i = p;
    }
    h[i].key = key; h[i].left = left; h[i].right = right; h[i].res = res; h[i].size = size;
}
static ft__tpair ft__heap_pop(ft__tws *w) {
    ft__tpair *h = w->heap, top = h[0], last = h[--w->heap_n];
    int64_t i = 0, n = w->heap_n;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && (h[c + 1].key < h[c].key || (h[c + 1].key == h[c].key && h[c + 1].left < h[c].left))) c++;
        if (last.key < h[c].key || (last.key == h[c].key && last.left <= h[c].left)) break;
        h[i] = h[c]; i = c;
    }
    if (n > 0) h[i] = last;
    return top;
}

/* ---- pre-tokenizers: each pass splits every word of w0 (lengths in code points) into w1 ----- */
#define FT__OUT ((uint32_t)0xFFFFFFFFu)
#define FT__TF(p) ((p) >= ini && (p) < end ? fl[p] : 0u)     /* flags, 0 past the word's ends  */
#define FT__TC(p) ((p) >= ini && (p) < end ? cp[p] : FT__OUT)
#define FT__EMIT(x) do { int64_t e_ = (x); if (e_ > prev) out[no++] = e_ - prev; prev = e_; pos = e_; } while (0)

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
   (unicode_regex_split_custom_gpt2 of llama.cpp, step for step) */
static int64_t ft__split_gpt2(const uint32_t *cp, const unsigned char *fl, const int64_t *in, int64_t nin, int64_t *out) {
    int64_t no = 0, start = 0, k;
    for (k = 0; k < nin; k++) {
        int64_t ini = start, end = start + in[k], pos = ini, prev = ini;
        start = end;
        while (pos < end) {
            uint32_t c = cp[pos];
            unsigned f = fl[pos], f2;
            int64_t nws = 0;
            if (c == '\'' && pos + 1 < end) {
                uint32_t c1 = cp[pos + 1];
                if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') { FT__EMIT(pos + 2); continue; }
                if (pos + 2 < end) {
                    uint32_t c2 = cp[pos + 2];
                    if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) { FT__EMIT(pos + 3); continue; }
                }
            }
            f2 = c == ' ' ? FT__TF(pos + 1) : f;
            if (f2 & FT__UC_L) {                              /*  ?\p{L}+ */
                pos += c == ' ';
                while (FT__TF(pos) & FT__UC_L) pos++;
                FT__EMIT(pos); continue;
            }
            if (f2 & FT__UC_N) {                              /*  ?\p{N}+ */
                pos += c == ' ';
                while (FT__TF(pos) & FT__UC_N) pos++;
                FT__EMIT(pos); continue;
            }
            if (!(f2 & (FT__UC_WS | FT__UC_L | FT__UC_N)) && f2) {   /*  ?[^\s\p{L}\p{N}]+ */
                pos += c == ' ';
                for (;;) { f2 = FT__TF(pos); if ((f2 & (FT__UC_WS | FT__UC_L | FT__UC_N)) || !f2) break; pos++; }
                FT__EMIT(pos); continue;
            }
            while (FT__TF(pos + nws) & FT__UC_WS) nws++;
            if (nws > 1 && FT__TC(pos + nws) != FT__OUT) { FT__EMIT(pos + nws - 1); continue; }  /* \s+(?!\S) */
            if (nws > 0) { FT__EMIT(pos + nws); continue; }  /* \s+ */
            FT__EMIT(pos + 1);                                /* no match: one code point */
        }
    }
    return no;
}

/* Llama 3 (ndig 3) and Qwen2 (ndig 1):
   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,ndig}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
   (unicode_regex_split_custom_llama3 / _qwen2) */
static uint32_t ft__ascii_lower(uint32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }
static int64_t ft__split_llama3(const uint32_t *cp, const unsigned char *fl, const int64_t *in, int64_t nin, int64_t *out, int ndig) {
    int64_t no = 0, start = 0, k;
    for (k = 0; k < nin; k++) {
        int64_t ini = start, end = start + in[k], pos = ini, prev = ini;
        start = end;
        while (pos < end) {
            uint32_t c = cp[pos];
            unsigned f = fl[pos], f2;
            int64_t nws = 0, last_rn = 0;
            /* llama.cpp lowers with the full Unicode table; only A-Z lower to these letters */
            if (c == '\'' && pos + 1 < end) {
                uint32_t c1 = ft__ascii_lower(cp[pos + 1]);
                if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') { FT__EMIT(pos + 2); continue; }
                if (pos + 2 < end) {
                    uint32_t c2 = ft__ascii_lower(cp[pos + 2]);
                    if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) { FT__EMIT(pos + 3); continue; }
                }
            }
            if (!(c == '\r' || c == '\n' || (f & FT__UC_N))) {          /* [^\r\n\p{L}\p{N}]?\p{L}+ */
                if ((f & FT__UC_L) || (FT__TF(pos + 1) & FT__UC_L)) {
                    pos++;
                    while (FT__TF(pos) & FT__UC_L) pos++;
                    FT__EMIT(pos); continue;
                }
            }
            if (f & FT__UC_N) {                                          /* \p{N}{1,ndig} */
                int64_t i0 = pos;
                while (FT__TF(pos) & FT__UC_N) {
                    if (++pos - i0 >= ndig) { FT__EMIT(pos); i0 = pos; }
                }
                FT__EMIT(pos); continue;
            }
            f2 = c == ' ' ? FT__TF(pos + 1) : f;                          /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
            if (!(f2 & (FT__UC_WS | FT__UC_L | FT__UC_N)) && f) {
                uint32_t c2;
                pos += c == ' ';
                for (;;) { f2 = FT__TF(pos); if ((f2 & (FT__UC_WS | FT__UC_L | FT__UC_N)) || !f2) break; pos++; }
                for (c2 = FT__TC(pos); c2 == '\r' || c2 == '\n'; c2 = FT__TC(pos)) pos++;   /* (a macro: no ++ inside) */
                FT__EMIT(pos); continue;
            }
            while (FT__TF(pos + nws) & FT__UC_WS) {
                uint32_t c2 = FT__TC(pos + nws);
                if (c2 == '\r' || c2 == '\n') last_rn = pos + nws + 1;
                nws++;
            }
            if (last_rn > 0) { FT__EMIT(last_rn); continue; }           /* \s*[\r\n]+ */
            if (nws > 1 && FT__TC(pos + nws) != FT__OUT) { FT__EMIT(pos + nws - 1); continue; }
            if (nws > 0) { FT__EMIT(pos + nws); continue; }
            FT__EMIT(pos + 1);
        }
    }
    return no;
}

/* The passes llama.cpp runs through std::regex: every match becomes a word, and so does every
   run of text between matches. cls: 0 \p{N}, 1 [\p{P}\$\+<=>\^~\|] (llama.cpp's "collapsed"
   form: ASCII punctuation and symbols but '`', non-ASCII \p{P} that is not \s), 2 [0-9].
   rep: 1 one code point per match, 0 a maximal run, 3 exactly three. */
static int ft__cls(uint32_t c, unsigned f, int cls) {
    if (cls == 0) return (f & FT__UC_N) != 0;
    if (cls == 2) return c >= '0' && c <= '9';
    if (c < 128) return c > 0x20 && c < 0x7F && c != '`' && !(f & (FT__UC_L | FT__UC_N));
    return (f & FT__UC_P) && !(f & FT__UC_WS);
}
static int64_t ft__split_class(const uint32_t *cp, const unsigned char *fl, const int64_t *in, int64_t nin, int64_t *out, int cls, int rep) {
    int64_t no = 0, start = 0, k;
    for (k = 0; k < nin; k++) {
        int64_t ini = start, end = start + in[k], pos = ini, prev = ini;
        start = end;
        while (pos < end) {
            int64_t m = 0;
            if (ft__cls(cp[pos], fl[pos], cls)) {
                if (rep == 1) m = 1;
                else if (rep == 0) { while (pos + m < end && ft__cls(cp[pos + m], fl[pos + m], cls)) m++; }
                else if (pos + 2 < end && ft__cls(cp[pos + 1], fl[pos + 1], cls) && ft__cls(cp[pos + 2], fl[pos + 2], cls)) m = 3;
            }
            if (!m) { pos++; continue; }
            if (pos > prev) out[no++] = pos - prev;
            out[no++] = m;
            pos += m; prev = pos;
        }
        if (end > prev) out[no++] = end - prev;
    }
    return no;
}
#undef FT__EMIT
#undef FT__TC
#undef FT__TF
#undef FT__OUT

/* byte-level BPE of one word (raw bytes b[0..n) at the start of w->buf, which has room for
   3n bytes): symbols start as single bytes (their byte
   chars), the lowest-rank adjacent pair merges first, leftmost on ties (llm_tokenizer_bpe_session) */
static void ft__bpe_word(const ft_tokenizer *t, ft__tws *w, const unsigned char *b, int64_t n) {
    ft__tsym *s;
    int64_t i;
    if (t->ignore_merges) {                  /* llama3: a word that is a token is not merged */
        unsigned char *e = w->buf + n;       /* the caller leaves 2n bytes of room after b    */
        int64_t m = 0;
        int32_t id;
        for (i = 0; i < n; i++) m += ft__utf8_put(e + m, ft__byte_cp(b[i]));
        id = ft__tok_lookup(t, e, (size_t)m);
        if (id >= 0) { ft__tws_emit(w, id); return; }
    }
    if (!ft__tws_grow(FT__CAST(void **, &w->sym), &w->sym_cap, n, sizeof(ft__tsym))) { w->oom = 1; return; }
    s = w->sym;
    w->heap_n = 0;
    for (i = 0; i < n; i++) {
        s[i].id = t->byte_tok[b[i]]; s[i].start = i; s[i].len = 1;
        s[i].prev = (int32_t)(i - 1); s[i].next = i + 1 < n ? (int32_t)(i + 1) : -1;
    }
    for (i = 1; i < n; i++) {
        int32_t res, r = ft__merge_rank(t, s[i - 1].id, s[i].id, &res);
        if (r >= 0) ft__heap_push(w, (double)r, (int32_t)(i - 1), (int32_t)i, res, 2);
    }
    while (w->heap_n > 0 && !w->oom) {
        ft__tpair p = ft__heap_pop(w);
        ft__tsym *L = &s[p.left], *R = &s[p.right];
        int32_t res, r;
        /* stale: a side already merged (symbols only grow, so equal sizes mean equal texts) */
        if (L->len == 0 || R->len == 0 || L->len + R->len != p.size) continue;
        L->len += R->len; R->len = 0;
        L->id = p.res;
        L->next = R->next;
        if (R->next >= 0) s[R->next].prev = p.left;
        if (L->prev >= 0 && (r = ft__merge_rank(t, s[L->prev].id, L->id, &res)) >= 0)
            ft__heap_push(w, (double)r, L->prev, p.left, res, s[L->prev].len + L->len);
        if (L->next >= 0 && (r = ft__merge_rank(t, L->id, s[L->next].id, &res)) >= 0)
            ft__heap_push(w, (double)r, p.left, L->next, res, L->len + s[L->next].len);
    }
    for (i = 0; i >= 0 && i < n; i = s[i].next) {
        if (s[i].id >= 0) { ft__tws_emit(w, s[i].id); continue; }
        {   /* a byte char that is not in the vocabulary: llama.cpp looks up each byte of its
               UTF-8 form as a one-byte token and drops those that are not tokens either */
            unsigned char u[4];
            int m = ft__utf8_put(u, ft__byte_cp(b[s[i].start])), j;
            for (j = 0; j < m; j++) { int32_t id = ft__tok_lookup(t, u + j, 1); if (id >= 0) ft__tws_emit(w, id); }
        }
    }
}

/* gpt2: one raw-text fragment -> code points -> words -> BPE */
static void ft__bpe_fragment(const ft_tokenizer *t, ft__tws *w, const unsigned char *s, size_t n) {
    size_t i = 0;
    int64_t ncp = 0, nw = 1, k, start = 0;
    while (i < n) {
        uint32_t c = ft__utf8_next(s, n, &i);
        w->cp[ncp] = c; w->fl[ncp] = (unsigned char)ft__uc_flags(c); ncp++;
    }
    if (ncp == 0) return;
    w->w0[0] = ncp;
    switch (t->pre) {
    case FT__PRE_GPT2:   nw = ft__split_gpt2(w->cp, w->fl, w->w0, nw, w->w1); memcpy(w->w0, w->w1, (size_t)nw * sizeof(int64_t)); break;
    case FT__PRE_SMOLLM:
        nw = ft__split_class(w->cp, w->fl, w->w0, nw, w->w1, 0, 1);
        nw = ft__split_gpt2(w->cp, w->fl, w->w1, nw, w->w0);
        break;
    case FT__PRE_LLAMA3: nw = ft__split_llama3(w->cp, w->fl, w->w0, nw, w->w1, 3); memcpy(w->w0, w->w1, (size_t)nw * sizeof(int64_t)); break;
    case FT__PRE_QWEN2:  nw = ft__split_llama3(w->cp, w->fl, w->w0, nw, w->w1, 1); memcpy(w->w0, w->w1, (size_t)nw * sizeof(int64_t)); break;
    default:             /* llama.cpp's "default": four passes */
        nw = ft__split_class(w->cp, w->fl, w->w0, nw, w->w1, 1, 0);
        nw = ft__split_gpt2(w->cp, w->fl, w->w1, nw, w->w0);
        nw = ft__split_class(w->cp, w->fl, w->w0, nw, w->w1, 0, 0);
        nw = ft__split_class(w->cp, w->fl, w->w1, nw, w->w0, 2, 3);
        break;
    }
    for (k = 0; k < nw && !w->oom; k++) {
        int64_t j, m = 0;
        /* the word's bytes, encoded again (at most 4 per code point, and 2x that for the
           byte-char form that ft__bpe_word writes after them) from its code points (invalid input became U+FFFD) */
        if (!ft__tws_grow(FT__CAST(void **, &w->buf), &w->buf_cap, 12 * w->w0[k] + 8, 1)) { w->oom = 1; return; }
        for (j = start; j < start + w->w0[k]; j++) m += ft__utf8_put(w->buf + m, w->cp[j]);
        start += w->w0[k];
        ft__bpe_word(t, w, w->buf, m);
    }
}

/* SentencePiece BPE of one fragment (llm_tokenizer_spm_session): ' ' -> U+2581 (and one
   prepended when asked), symbols are UTF-8 characters, the adjacent pair whose joined text is
   the token of highest score merges first (leftmost on ties), leftovers become <0xXX> bytes */
static void ft__spm_try(const ft_tokenizer *t, ft__tws *w, int32_t l, int32_t r) {
    ft__tsym *s = w->sym;
    int32_t id;
    if (l < 0 || r < 0) return;
    id = ft__tok_lookup(t, w->buf + s[l].start, (size_t)(s[l].len + s[r].len));
    if (id < 0) return;
    ft__heap_push(w, -(double)t->score[id], l, r, id, s[l].len + s[r].len);
}
static void ft__spm_fragment(const ft_tokenizer *t, ft__tws *w, const unsigned char *s, size_t n, int prefix_space) {
    static const unsigned char u8len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    int64_t m = 0, ns = 0, off, i;
    size_t j;
    ft__tsym *sy;
    if (!ft__tws_grow(FT__CAST(void **, &w->buf), &w->buf_cap, 3 * ((int64_t)n + 1), 1)) { w->oom = 1; return; }
    if (prefix_space) { memcpy(w->buf, "\xE2\x96\x81", 3); m = 3; }
    for (j = 0; j < n; j++) {
        if (s[j] == ' ') { memcpy(w->buf + m, "\xE2\x96\x81", 3); m += 3; }
        else w->buf[m++] = s[j];
    }
    if (!ft__tws_grow(FT__CAST(void **, &w->sym), &w->sym_cap, m, sizeof(ft__tsym))) { w->oom = 1; return; }
    sy = w->sym;
    for (off = 0; off < m; ns++) {
        int64_t l = FT__MIN((int64_t)u8len[w->buf[off] >> 4], m - off);
        sy[ns].id = -2; sy[ns].start = off; sy[ns].len = l;
        off += l;
        sy[ns].prev = (int32_t)(ns - 1); sy[ns].next = off == m ? -1 : (int32_t)(ns + 1);
    }
    w->heap_n = 0;
    for (i = 1; i < ns; i++) ft__spm_try(t, w, (int32_t)(i - 1), (int32_t)i);
    while (w->heap_n > 0 && !w->oom) {
        ft__tpair p = ft__heap_pop(w);
        ft__tsym *L = &sy[p.left], *R = &sy[p.right];
        if (L->len == 0 || R->len == 0 || L->len + R->len != p.size) continue;
        L->len += R->len; R->len = 0; L->id = p.res;
        L->next = R->next;
        if (R->next >= 0) sy[R->next].prev = p.left;
        ft__spm_try(t, w, L->prev, p.left);
        ft__spm_try(t, w, p.left, L->next);
    }
    for (i = 0; i >= 0 && i < ns; i = sy[i].next) {
        int32_t id = sy[i].id == -2 ? ft__tok_lookup(t, w->buf + sy[i].start, (size_t)sy[i].len) : sy[i].id;
        if (id >= 0) { ft__tws_emit(w, id); continue; }
        for (off = 0; off < sy[i].len; off++) {
            int32_t b = t->byte_tok[w->buf[sy[i].start + off]];
            if (b >= 0) ft__tws_emit(w, b);
        }
    }
}

/* ---- special tokens: llama.cpp's tokenizer_st_partition ----------------------------------- */
typedef struct ft__tfrag { int64_t off, len; int32_t id; } ft__tfrag;     /* id -1: raw text */

static int64_t ft__find(const char *s, int64_t from, int64_t to, const char *p, int64_t pl) {
    const char *q = s + from, *e = s + to;
    while (e - q >= pl) {
        const char *h = FT__CAST(const char *, memchr(q, p[0], (size_t)(e - q - pl + 1)));
        if (!h) return -1;
        if (memcmp(h, p, (size_t)pl) == 0) return h - s;
        q = h + 1;
    }
    return -1;
}

/* For each special token, longest first, cut every raw fragment at each of its occurrences,
   left to right. Note this is not "longest match at each position": a longer token is taken
   out of the whole text before a shorter one is looked for, as llama.cpp does. Control and
   unknown tokens only when parse_special; user-defined tokens always (as llama.cpp and HF). */
static ft_result ft__partition(const ft_tokenizer *t, const char *s, int64_t n, int parse_special, ft__tfrag **out, int64_t *nout) {
    ft__tfrag *fr = NULL, *nf = NULL, *tmp;
    int64_t cap = 0, ncap = 0, nfr = 0, k;
    unsigned char seen[256];
    *out = NULL; *nout = 0;
    if (n == 0) return FT_OK;
    memset(seen, 0, sizeof seen);
    for (k = 0; k < n; k++) seen[(unsigned char)s[k]] = 1;
    if (!ft__tws_grow(FT__CAST(void **, &fr), &cap, 16, sizeof *fr)) return ft_set_error(FT_ERR_NOMEM, "tokenize: out of memory");
    fr[0].off = 0; fr[0].len = n; fr[0].id = -1; nfr = 1;
    for (k = 0; k < t->n_special; k++) {
        int32_t id = t->special[k];
        const char *p = t->text + t->off[id];
        int64_t pl = (int64_t)(t->off[id + 1] - t->off[id]), f, m = 0, hit = 0;
        if (!parse_special && (t->type[id] == FT__TT_CONTROL || t->type[id] == FT__TT_UNKNOWN)) continue;
        if (pl > n || !seen[(unsigned char)p[0]]) continue;
        for (f = 0; f < nfr && !hit; f++)
            if (fr[f].id < 0 && ft__find(s, fr[f].off, fr[f].off + fr[f].len, p, pl) >= 0) hit = 1;
        if (!hit) continue;
        for (f = 0; f < nfr; f++) {
            int64_t pos = fr[f].off, end = fr[f].off + fr[f].len, at;
            if (fr[f].id >= 0) {
                if (!ft__tws_grow(FT__CAST(void **, &nf), &ncap, m + 1, sizeof *nf)) goto oom;
                nf[m++] = fr[f];
                continue;
            }
            while ((at = ft__find(s, pos, end, p, pl)) >= 0) {
                if (!ft__tws_grow(FT__CAST(void **, &nf), &ncap, m + 2, sizeof *nf)) goto oom;
                if (at > pos) { nf[m].off = pos; nf[m].len = at - pos; nf[m].id = -1; m++; }
                nf[m].off = at; nf[m].len = pl; nf[m].id = id; m++;
                pos = at + pl;
            }
            if (pos < end) {
                if (!ft__tws_grow(FT__CAST(void **, &nf), &ncap, m + 1, sizeof *nf)) goto oom;
                nf[m].off = pos; nf[m].len = end - pos; nf[m].id = -1; m++;
            }
        }
        tmp = fr; fr = nf; nf = tmp;
        { int64_t c = cap; cap = ncap; ncap = c; }
        nfr = m;
    }
    FT_FREE(nf);
    *out = fr; *nout = nfr;
    return FT_OK;
oom:
    FT_FREE(fr); FT_FREE(nf);
    return ft_set_error(FT_ERR_NOMEM, "tokenize: out of memory");
}

FT_API int64_t ft_tokenize(const ft_tokenizer *t, const char *text, int64_t len, int32_t *ids, int64_t cap,
                           int add_bos, int parse_special) {
    ft__tws w;
    ft__tfrag *fr = NULL;
    int64_t nfr = 0, f;
    ft_result r;
    int prev_special = 1;
    if (!t || (!text && len > 0) || cap < 0 || (cap > 0 && !ids))
        return ft_set_error(FT_ERR_INVALID, "ft_tokenize: %s", !t ? "no tokenizer" : !text ? "no text" : "bad output buffer");
    if (len < 0) len = text ? (int64_t)strlen(text) : 0;
    if (add_bos && ((t->add_bos && t->bos < 0) || (t->add_eos && t->eos < 0)))
        return ft_set_error(FT_ERR_STATE, "ft_tokenize: the model asks for a BOS/EOS token it does not have");
    memset(&w, 0, sizeof w);
    w.ids = ids; w.cap = cap;
    if ((r = ft__partition(t, text, len, parse_special, &fr, &nfr)) != FT_OK) return r;
    w.cp = FT__CAST(uint32_t *, FT_MALLOC(((size_t)len + 1) * sizeof(uint32_t)));
    w.fl = FT__CAST(unsigned char *, FT_MALLOC((size_t)len + 1));
    w.w0 = FT__CAST(int64_t *, FT_MALLOC(((size_t)len + 1) * sizeof(int64_t)));
    w.w1 = FT__CAST(int64_t *, FT_MALLOC(((size_t)len + 1) * sizeof(int64_t)));
    if (!w.cp || !w.fl || !w.w0 || !w.w1) w.oom = 1;
    if (add_bos && t->add_bos) ft__tws_emit(&w, t->bos);
    for (f = 0; f < nfr && !w.oom; f++) {
        if (fr[f].id >= 0) { ft__tws_emit(&w, fr[f].id); prev_special = 1; continue; }
        if (t->kind == FT_TOKENIZER_SPM)
            ft__spm_fragment(t, &w, FT__CAST(const unsigned char *, text) + fr[f].off, (size_t)fr[f].len, t->add_space_prefix && prev_special);
        else
            ft__bpe_fragment(t, &w, FT__CAST(const unsigned char *, text) + fr[f].off, (size_t)fr[f].len);
        prev_special = 0;
    }
    if (add_bos && t->add_eos) ft__tws_emit(&w, t->eos);
    FT_FREE(fr); FT_FREE(w.cp); FT_FREE(w.fl); FT_FREE(w.w0); FT_FREE(w.w1);
    FT_FREE(w.buf); FT_FREE(w.sym); FT_FREE(w.heap);
    if (w.oom) return ft_set_error(FT_ERR_NOMEM, "ft_tokenize: out of memory (%lld bytes of text)", (long long)len);
    return w.n;
}

/* ---- decoding -------------------------------------------------------------------------------- */
FT_API int64_t ft_token_to_piece(const ft_tokenizer *t, int32_t id, char *buf, int64_t cap, int show_special) {
    int64_t n;
    if (!t || id < 0 || id >= t->n_vocab || cap < 0 || (cap > 0 && !buf))
        return ft_set_error(FT_ERR_INVALID, "ft_token_to_piece: %s %d", !t ? "no tokenizer" : "bad token id or buffer", (int)id);
    if (!show_special && (t->type[id] == FT__TT_CONTROL || t->type[id] == FT__TT_UNKNOWN)) return 0;
    n = (int64_t)(t->piece_off[id + 1] - t->piece_off[id]);
    if (n <= cap && n > 0) memcpy(buf, t->piece + t->piece_off[id], (size_t)n);
    return n;
}

/* llama.cpp's clean_spaces passes of llama_vocab::impl::detokenize, verbatim */
static int64_t ft__clean_spaces(char *text, int64_t total) {
    int64_t i, total1, total2, total3;
    total1 = total; total = total ? 1 : 0;                       /* " ?", " !", " .", " ," */
    for (i = 1; i < total1; ++i) {
        const char x = text[i];
        if (text[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) total--;
        text[total++] = x;
    }
    total2 = total; total = total ? 1 : 0;                       /* " ' " -> "'" */
    for (i = 1; i < total2; ++i) {
        const char x = text[i];
        if (x == '\'' && i + 1 < total2 && text[i - 1] == ' ' && text[i + 1] == ' ') { total--; text[++i] = '\0'; }
        text[total++] = x;
    }
    total3 = total; total = total ? 1 : 0;                       /* " 's", " 'm", " 're", " 've" */
    for (i = 1; i < total3; ++i) {
        const char x = text[i];
        if (text[i - 1] == ' ' && x == '\'' && i + 1 < total3) {
            const char x1 = text[i + 1];
            if (x1 == 's' || x1 == 'm') total--;
            else if (i + 2 < total3 && ((x1 == 'r' && text[i + 2] == 'e') || (x1 == 'v' && text[i + 2] == 'e'))) total--;
        }
        text[total++] = x;
    }
    return total;
}

FT_API int64_t ft_detokenize(const ft_tokenizer *t, const int32_t *ids, int64_t n, char *buf, int64_t cap, int show_special) {
    int64_t i, total = 0;
    char *tmp;
    if (!t || n < 0 || (n > 0 && !ids) || cap < 0 || (cap > 0 && !buf))
        return ft_set_error(FT_ERR_INVALID, "ft_detokenize: bad arguments");
    for (i = 0; i < n; i++) {
        int32_t id = ids[i];
        int64_t m;
        if (id < 0 || id >= t->n_vocab) return ft_set_error(FT_ERR_INVALID, "ft_detokenize: token %lld is %d, outside the vocabulary", (long long)i, (int)id);
        if (!show_special && (t->type[id] == FT__TT_CONTROL || t->type[id] == FT__TT_UNKNOWN)) continue;
        m = (int64_t)(t->piece_off[id + 1] - t->piece_off[id]);
        /* add_space_prefix models: the first piece loses one leading space (llama.cpp) */
        if (i == 0 && t->add_space_prefix && m > 0 && t->piece[t->piece_off[id]] == ' ') m--;
        total += m;
    }
    tmp = FT__CAST(char *, FT_MALLOC((size_t)total + 1));
    if (!tmp) return ft_set_error(FT_ERR_NOMEM, "ft_detokenize: out of memory");
    for (i = 0, total = 0; i < n; i++) {
        int32_t id = ids[i];
        const char *p = t->piece + t->piece_off[id];
        int64_t m = (int64_t)(t->piece_off[id + 1] - t->piece_off[id]);
        if (!show_special && (t->type[id] == FT__TT_CONTROL || t->type[id] == FT__TT_UNKNOWN)) continue;
        if (i == 0 && t->add_space_prefix && m > 0 && *p == ' ') { p++; m--; }
        memcpy(tmp + total, p, (size_t)m);
        total += m;
    }
    if (t->clean_spaces) total = ft__clean_spaces(tmp, total);
    if (total <= cap && total > 0) memcpy(buf, tmp, (size_t)total);     /* buf may be NULL when cap is 0 */
    if (total < cap) buf[total] = '\0';
    FT_FREE(tmp);
    return total;
}

/* ---- chat templates: llama.cpp's llm_chat_detect_template / llm_chat_apply_template -------- */
enum { FT__CHAT_UNKNOWN, FT__CHAT_OTHER, FT__CHAT_CHATML, FT__CHAT_LLAMA2, FT__CHAT_LLAMA2_SYS,
       FT__CHAT_LLAMA2_SYS_BOS, FT__CHAT_LLAMA2_SYS_STRIP, FT__CHAT_LLAMA3, FT__CHAT_ZEPHYR, FT__CHAT_GEMMA,
       FT__CHAT_PHI3 };

/* the order of the tests is llama.cpp's: a template that llama.cpp takes for another format
   (phi-4, SmolVLM, mistral, phi-3, ...) is FT__CHAT_OTHER here, not a wrong guess */
static int ft__chat_detect(const char *tm, const char **other) {
    static const struct { const char *name; int kind; } named[] = {
        {"chatml", FT__CHAT_CHATML}, {"llama2", FT__CHAT_LLAMA2}, {"llama2-sys", FT__CHAT_LLAMA2_SYS},
        {"llama2-sys-bos", FT__CHAT_LLAMA2_SYS_BOS}, {"llama2-sys-strip", FT__CHAT_LLAMA2_SYS_STRIP},
        {"llama3", FT__CHAT_LLAMA3}, {"zephyr", FT__CHAT_ZEPHYR}, {"gemma", FT__CHAT_GEMMA}, {"phi3", FT__CHAT_PHI3}};
    size_t i;
#define FT__HAS(s) (strstr(tm, s) != NULL)
    *other = "";
    for (i = 0; i < sizeof named / sizeof named[0]; i++) if (!strcmp(tm, named[i].name)) return named[i].kind;
    if (FT__HAS("<|im_start|>")) {
        if (FT__HAS("<|im_sep|>")) { *other = "phi4"; return FT__CHAT_OTHER; }
        if (FT__HAS("<end_of_utterance>")) { *other = "smolvlm"; return FT__CHAT_OTHER; }
        return FT__CHAT_CHATML;
    }
    if (strncmp(tm, "mistral", 7) == 0 || FT__HAS("[INST]")) {
        if (FT__HAS("[SYSTEM_PROMPT]") || FT__HAS("' [INST] ' + system_message") || FT__HAS("[AVAILABLE_TOOLS]")) { *other = "mistral"; return FT__CHAT_OTHER; }
        if (FT__HAS("content.strip()")) return FT__CHAT_LLAMA2_SYS_STRIP;
        if (FT__HAS("bos_token + '[INST]")) return FT__CHAT_LLAMA2_SYS_BOS;
        if (FT__HAS("<<SYS>>")) return FT__CHAT_LLAMA2_SYS;
        return FT__CHAT_LLAMA2;
    }
    if (FT__HAS("<|assistant|>") && FT__HAS("<|end|>")) return FT__CHAT_PHI3;
    if (FT__HAS("[gMASK]<sop>")) { *other = "chatglm4"; return FT__CHAT_OTHER; }
    if (FT__HAS("<|assistant|>") && FT__HAS("<|user|>")) { *other = "falcon3/glmedge/exaone-moe"; return FT__CHAT_OTHER; }
    if (FT__HAS("<|{{ item['role'] }}|>") && FT__HAS("<|begin_of_image|>")) { *other = "glmedge"; return FT__CHAT_OTHER; }
    if (FT__HAS("<|user|>") && FT__HAS("<|endoftext|>")) return FT__CHAT_ZEPHYR;
    if (FT__HAS("bos_token + message['role']")) { *other = "monarch"; return FT__CHAT_OTHER; }
    if (FT__HAS("<start_of_turn>")) return FT__CHAT_GEMMA;
    if (FT__HAS("'\\n\\nAssistant: ' + eos_token")) { *other = "orion"; return FT__CHAT_OTHER; }
    if (FT__HAS("GPT4 Correct ")) { *other = "openchat"; return FT__CHAT_OTHER; }
    if (FT__HAS("USER: ") && FT__HAS("ASSISTANT: ")) { *other = "vicuna"; return FT__CHAT_OTHER; }
    if (FT__HAS("### Instruction:") && FT__HAS("<|EOT|>")) { *other = "deepseek"; return FT__CHAT_OTHER; }
    if (FT__HAS("<|START_OF_TURN_TOKEN|>") && FT__HAS("<|USER_TOKEN|>")) { *other = "command-r"; return FT__CHAT_OTHER; }
    if (FT__HAS("<|start_header_id|>") && FT__HAS("<|end_header_id|>")) return FT__CHAT_LLAMA3;
#undef FT__HAS
    return FT__CHAT_UNKNOWN;
}

typedef struct ft__sbuf { char *buf; int64_t cap, n; } ft__sbuf;
static void ft__sb_put(ft__sbuf *b, const char *s, size_t n) {
    if (b->n < b->cap) memcpy(b->buf + b->n, s, (size_t)FT__MIN((int64_t)n, b->cap - b->n));
    b->n += (int64_t)n;
}
static void ft__sb_str(ft__sbuf *b, const char *s) { ft__sb_put(b, s, strlen(s)); }
static void ft__sb_trim(ft__sbuf *b, const char *s) {          /* llama.cpp's trim (isspace) */
    size_t a = 0, e = strlen(s);
    while (a < e && (s[a] == ' ' || (s[a] >= '\t' && s[a] <= '\r'))) a++;
    while (e > a && (s[e - 1] == ' ' || (s[e - 1] >= '\t' && s[e - 1] <= '\r'))) e--;
    ft__sb_put(b, s + a, e - a);
}

/* A ChatML jinja template with a default system prompt holds it as one string literal
   '<|im_start|>system\n...<|im_end|>\n' (SmolLM2: "You are a helpful AI assistant named
   SmolLM, trained by Hugging Face"; Qwen2: "You are a helpful assistant"), printed when the
   first message is not a system message. Emits the literal's text, unescaped; 0 if none. */
static int ft__chatml_default_system(const char *tm, ft__sbuf *b) {
    const char *p = tm;
    while ((p = strstr(p, "<|im_start|>system")) != NULL) {
        char q = p > tm ? p[-1] : 0;
        const char *e, *s = p + 18;
        if ((q == '\'' || q == '"') && (*s == '\n' || (s[0] == '\\' && s[1] == 'n'))) {
            for (e = s; *e && *e != q; e++) if (*e == '\\' && e[1]) e++;
            if (*e == q && e - p >= 30) {
                const char *tail = e - 11, *tail2 = e - 12;   /* "<|im_end|>" + newline or "\n" */
                if ((e[-1] == '\n' && strncmp(tail, "<|im_end|>", 10) == 0) ||
                    (e[-2] == '\\' && e[-1] == 'n' && strncmp(tail2, "<|im_end|>", 10) == 0)) {
                    const char *c;
                    if (b) for (c = p; c < e; c++) {
                        if (*c == '\\' && c + 1 < e) {
                            char x = *++c;
                            ft__sb_put(b, x == 'n' ? "\n" : x == 't' ? "\t" : x == 'r' ? "\r" : &x, 1);
                        } else ft__sb_put(b, c, 1);
                    }
                    return 1;
                }
            }
        }
        p += 18;
    }
    return 0;
}

/* gemma's turns: "assistant" is "model", system messages (trimmed) go in front of the next user
   turn, every content trimmed */
static void ft__chat_gemma(ft__sbuf *b, const ft_chat_msg *msgs, int n, int add_generation_prompt) {
    int i, sys_from = -1, sys_to = -1, k;
    for (i = 0; i < n; i++) {
        const char *role = msgs[i].role;
        if (!strcmp(role, "system")) { if (sys_from < 0) sys_from = i; sys_to = i + 1; continue; }
        if (!strcmp(role, "assistant")) role = "model";
        ft__sb_str(b, "<start_of_turn>"); ft__sb_str(b, role); ft__sb_str(b, "\n");
        if (sys_from >= 0 && strcmp(role, "model") != 0) {
            for (k = sys_from; k < sys_to; k++) if (!strcmp(msgs[k].role, "system")) ft__sb_trim(b, msgs[k].content);
            ft__sb_str(b, "\n\n");
            sys_from = sys_to = -1;
        }
        ft__sb_trim(b, msgs[i].content); ft__sb_str(b, "<end_of_turn>\n");
    }
    if (add_generation_prompt) ft__sb_str(b, "<start_of_turn>model\n");
}

FT_API int64_t ft_chat_apply(const char *template_src, const ft_chat_msg *msgs, int n, int add_generation_prompt, char *buf, int64_t cap) {
    const char *tm = template_src ? template_src : "chatml", *other;
    ft__sbuf b;
    int kind, i;
    if (n < 0 || (n > 0 && !msgs) || cap < 0 || (cap > 0 && !buf)) return ft_set_error(FT_ERR_INVALID, "ft_chat_apply: bad arguments");
    for (i = 0; i < n; i++) if (!msgs[i].role || !msgs[i].content) return ft_set_error(FT_ERR_INVALID, "ft_chat_apply: message %d has no role or content", i);
    kind = ft__chat_detect(tm, &other);
    if (kind == FT__CHAT_UNKNOWN) return ft_set_error(FT_ERR_UNSUPPORTED, "ft_chat_apply: chat template not recognised");
    if (kind == FT__CHAT_OTHER) return ft_set_error(FT_ERR_UNSUPPORTED, "ft_chat_apply: the chat template is llama.cpp's \"%s\", which is not implemented", other);
    b.buf = buf; b.cap = cap; b.n = 0;
    if (kind == FT__CHAT_CHATML) {
        if (n > 0 && strcmp(msgs[0].role, "system") != 0) ft__chatml_default_system(tm, &b);
        for (i = 0; i < n; i++) {
            ft__sb_str(&b, "<|im_start|>"); ft__sb_str(&b, msgs[i].role); ft__sb_str(&b, "\n");
            ft__sb_str(&b, msgs[i].content); ft__sb_str(&b, "<|im_end|>\n");
        }
        if (add_generation_prompt) ft__sb_str(&b, "<|im_start|>assistant\n");
    } else if (kind == FT__CHAT_LLAMA3) {
        for (i = 0; i < n; i++) {
            ft__sb_str(&b, "<|start_header_id|>"); ft__sb_str(&b, msgs[i].role); ft__sb_str(&b, "<|end_header_id|>\n\n");
            ft__sb_trim(&b, msgs[i].content); ft__sb_str(&b, "<|eot_id|>");
        }
        if (add_generation_prompt) ft__sb_str(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    } else if (kind == FT__CHAT_GEMMA) {
        ft__chat_gemma(&b, msgs, n, add_generation_prompt);
    } else if (kind == FT__CHAT_PHI3) {
        for (i = 0; i < n; i++) {
            ft__sb_str(&b, "<|"); ft__sb_str(&b, msgs[i].role); ft__sb_str(&b, "|>\n");
            ft__sb_str(&b, msgs[i].content); ft__sb_str(&b, "<|end|>\n");
        }
        if (add_generation_prompt) ft__sb_str(&b, "<|assistant|>\n");
    } else if (kind == FT__CHAT_ZEPHYR) {
        for (i = 0; i < n; i++) {
            ft__sb_str(&b, "<|"); ft__sb_str(&b, msgs[i].role); ft__sb_str(&b, "|>\n");
            ft__sb_str(&b, msgs[i].content); ft__sb_str(&b, "<|endoftext|>\n");
        }
        if (add_generation_prompt) ft__sb_str(&b, "<|assistant|>\n");
    } else {   /* llama2 and its variants; no generation prompt: the turn is already open */
        int sys = kind != FT__CHAT_LLAMA2, bos_in = kind == FT__CHAT_LLAMA2_SYS_BOS, strip = kind == FT__CHAT_LLAMA2_SYS_STRIP;
        int inside = 1;
        ft__sb_str(&b, "[INST] ");
        for (i = 0; i < n; i++) {
            const char *role = msgs[i].role;
            if (!inside) { inside = 1; ft__sb_str(&b, bos_in ? "<s>[INST] " : "[INST] "); }
            if (!strcmp(role, "system")) {
                if (sys) ft__sb_str(&b, "<<SYS>>\n");
                if (strip) ft__sb_trim(&b, msgs[i].content); else ft__sb_str(&b, msgs[i].content);
                ft__sb_str(&b, sys ? "\n<</SYS>>\n\n" : "\n");
            } else {
                if (strip) ft__sb_trim(&b, msgs[i].content); else ft__sb_str(&b, msgs[i].content);
                if (!strcmp(role, "user")) ft__sb_str(&b, " [/INST]");
                else { ft__sb_str(&b, "</s>"); inside = 0; }
            }
        }
    }
    if (b.n < cap) buf[b.n] = '\0';
    return b.n;
}

/* ============================================================================================
   [model] decoder-only transformers built from GGUF metadata: llama (llama 2/3, mistral, and
   mixtral's experts), qwen2, qwen3, gemma3, phi3, qwen3moe, olmoe - one forward, and a table
   with a row of differences per architecture
   Weights stay in the file's own types, mapped read-only; the forward is made of the autograd
   ops, so the same code computes training losses, reference log-probs and generation.
   Per layer:  h += post(Wo attn(rope(qn(Wq n)), rope(kn(Wk n)), Wv n))   n = rmsnorm(h) attn_norm
               h += post(Wdown (act(Wgate n) * Wup n))                    n = rmsnorm(h) ffn_norm
   where the row decides: qn, kn the q/k RMSNorm (per head: qwen3, gemma3; whole: olmoe), post an
   RMSNorm of each sublayer's output (gemma3), act silu or tanh-GELU (gemma3); the embeddings
   times sqrt(n_embd) (gemma3); fused qkv / gate-up tensors bound as row views (phi3). RoPE:
   its scaling (llama3 frequency factors, linear, YaRN) from the metadata; sliding-window layers
   (gemma3: 5 of every 6, window attention.sliding_window, their own RoPE base). A layer with a
   router (ffn_gate_inp) is a mixture of experts: the FFN becomes the top-k experts' SwiGLU
   outputs weighted by the router's softmax (see ft__model_moe).
   GGUF stores a weight with ne = [in, out]: row-major (out, in), PyTorch's layout; the
   converter permuted the Q/K rows so that RoPE rotates adjacent pairs (FT_ROPE_NORM) for llama
   and mistral; the others keep HF's order and rotate halves (FT_ROPE_NEOX).
   ============================================================================================ */

struct ft_model {
    ft_gguf        *g;
    ft_model_config c;
    ft_tensor      *tok_embd, *output_norm, *output;    /* output == tok_embd when tied       */
    ft_layer       *layers;
    ft_tensor      *w; int64_t n_w;                     /* headers of every weight            */
    ft_nf4         *nf4;                                /* the state of w[i] when it is NF4   */
    unsigned char  *nf4_data;                           /* NF4 weights made at load, one block */
    float           nf4_code[256];                      /* their dynamic map                  */
    float          *widened;                            /* f32 copies of non-f32 norm weights */
    char           *names; size_t names_len;            /* weight names, NUL-terminated        */
    ft_peft        *peft;                               /* attached method, or NULL           */
    void           *baked[8]; int n_baked;              /* baked-in adapters: weight headers   */
    float          *baked_data[8];                      /* ... and their f32 values (aligned)  */
    ft_params      *baked_params[8]; int n_baked_params;
    ft_tokenizer   *tok;                                /* from the tokenizer.ggml.* keys      */
    char           *chat_template;                      /* tokenizer.chat_template, or NULL    */
    int             file_finite;                        /* ft_gguf_check_finite passed (once)  */
    unsigned char  *swa;                                /* (n_layer) 1: a sliding-window layer */
    ft_tensor      *rope_freqs;                         /* llama3's frequency factors, or NULL */
    ft_tensor      *rope_long, *rope_short;             /* phi3's LongRoPE factors, or NULL     */
    ft_tensor      *experts;                            /* the experts' 2-D views (l, e, 3)    */
    ft_tensor     **expert_ptrs;                        /* the layers' gate/up/down arrays      */
    ft_nf4         *expert_nf4;                         /* their NF4 states (quantize at load)  */
    int32_t        *moe_sel; int64_t moe_n, moe_cap;    /* last forward: (n_layer, moe_n, k)    */
    ft_tensor     **moe_logits;                         /* the router logits per layer of the
                                                           last forward with gradients ...    */
    const ft_ctx   *moe_ctx; unsigned long moe_reset;   /* ... on this context's tape          */
};

/* the tokenizer from tokenizer.ggml.* (as llama.cpp reads them): *out NULL and FT_OK when the
   file has no vocabulary */
FT_API ft_result ft_tokenizer_from_gguf(ft_tokenizer **out, const ft_gguf *g) {
    ft_gguf_str s; const ft_gguf_kv *tk, *ty, *sc, *mg, *st;
    ft_tokenizer_kind kind; char pre[64] = ""; ft_result r; int64_t i, v;
    const char **tokens = NULL, **merges = NULL; uint64_t *tl = NULL, *ml = NULL; int32_t *types = NULL; float *scores = NULL;
    int32_t ids[4] = {-1, -1, -1, -1}; int flags[3] = {-1, -1, -1};
    static const char *id_keys[4] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id"};
    static const char *flag_keys[3] = {"tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token", "tokenizer.ggml.add_space_prefix"};
    *out = NULL;
    if (!ft_gguf_get_str(g, "tokenizer.ggml.model", &s)) return FT_OK;
    if (s.n == 4 && memcmp(s.s, "gpt2", 4) == 0) kind = FT_TOKENIZER_BPE_GPT2;
    else if (s.n == 5 && memcmp(s.s, "llama", 5) == 0) kind = FT_TOKENIZER_SPM;
    else return ft_set_error(FT_ERR_UNSUPPORTED, "%s: tokenizer model '%.*s' is not supported (gpt2, llama are)", ft_gguf_path(g), (int)FT__MIN(s.n, 40), s.s);
    if (ft_gguf_get_str(g, "tokenizer.ggml.pre", &s)) memcpy(pre, s.s, (size_t)FT__MIN(s.n, sizeof pre - 1));
    tk = ft_gguf_find(g, "tokenizer.ggml.tokens");
    if (!tk || tk->type != FT_GGUF_ARRAY || tk->arr_type != FT_GGUF_STRING)
        return ft_set_error(FT_ERR_FORMAT, "%s: tokenizer.ggml.tokens is missing or not a string array", ft_gguf_path(g));
    ty = ft_gguf_find(g, "tokenizer.ggml.token_type");
    sc = ft_gguf_find(g, "tokenizer.ggml.scores");
    mg = ft_gguf_find(g, "tokenizer.ggml.merges");
    if ((ty && (ty->type != FT_GGUF_ARRAY || ty->n != tk->n)) || (sc && (sc->type != FT_GGUF_ARRAY || sc->n != tk->n)) ||
        (mg && (mg->type != FT_GGUF_ARRAY || mg->arr_type != FT_GGUF_STRING)))
        return ft_set_error(FT_ERR_FORMAT, "%s: token_type, scores or merges do not match the %llu tokens", ft_gguf_path(g), (unsigned long long)tk->n);
    tokens = FT__CAST(const char **, FT_MALLOC((size_t)tk->n * sizeof(char *)));
    tl = FT__CAST(uint64_t *, FT_MALLOC((size_t)tk->n * sizeof(uint64_t)));
    if (ty) types = FT__CAST(int32_t *, FT_MALLOC((size_t)tk->n * sizeof(int32_t)));
    if (sc) scores = FT__CAST(float *, FT_MALLOC((size_t)tk->n * sizeof(float)));
    if (mg) { merges = FT__CAST(const char **, FT_MALLOC((size_t)FT__MAX(mg->n, 1) * sizeof(char *))); ml = FT__CAST(uint64_t *, FT_MALLOC((size_t)FT__MAX(mg->n, 1) * sizeof(uint64_t))); }
    if (!tokens || !tl || (ty && !types) || (sc && !scores) || (mg && (!merges || !ml))) r = ft_set_error(FT_ERR_NOMEM, "%s: out of memory", ft_gguf_path(g));
    else {
        for (i = 0, r = FT_OK; i < (int64_t)tk->n && r == FT_OK; i++) {
            double score = sc ? ft_gguf_kv_float(sc, (uint64_t)i) : 0;
            tokens[i] = tk->strs[i].s; tl[i] = tk->strs[i].n;
            if (types) types[i] = (int32_t)FT__MIN(FT__MAX(ft_gguf_kv_int(ty, (uint64_t)i), -1), 64);
            if (scores) scores[i] = (float)score;
            if (!(fabs(score) <= FLT_MAX))
                r = ft_set_error(FT_ERR_FORMAT, "%s: tokenizer.ggml.scores[%lld] is %g, not a finite float", ft_gguf_path(g), (long long)i, score);
        }
    }
    if (r == FT_OK) {
        for (i = 0; mg && i < (int64_t)mg->n; i++) { merges[i] = mg->strs[i].s; ml[i] = mg->strs[i].n; }
        for (i = 0; i < 4; i++)                 /* ids outside the vocabulary mean "none" */
            if (ft_gguf_get_int(g, id_keys[i], &v) && v >= 0 && v < (int64_t)tk->n) ids[i] = (int32_t)v;
        if (!ft_gguf_find(g, id_keys[0]) && !ft_gguf_find(g, id_keys[1]) && kind == FT_TOKENIZER_SPM && tk->n > 2) { ids[0] = 1; ids[1] = 2; }
        for (i = 0; i < 3; i++) if (ft_gguf_get_int(g, flag_keys[i], &v)) flags[i] = v != 0;
        r = ft__tokenizer_init(out, kind, pre, (int64_t)tk->n, tokens, tl, types, scores, mg ? (int64_t)mg->n : 0, merges, ml,
                               ids[0], ids[1], ids[2], ids[3], flags[0], flags[1], flags[2]);
        if (r != FT_OK) r = ft_set_error(r, "%s: %s", ft_gguf_path(g), ft_last_error());
        else if ((st = ft_gguf_find(g, "finetune.stop_token_ids")) != NULL && st->type == FT_GGUF_ARRAY)
            for (i = 0; i < (int64_t)st->n && (*out)->n_stops < 8; i++) {
                v = ft_gguf_kv_int(st, (uint64_t)i);
                if (v >= 0 && v < (int64_t)tk->n) (*out)->stops[(*out)->n_stops++] = (int32_t)v;
            }
    }
    FT_FREE(tokens); FT_FREE(tl); FT_FREE(types); FT_FREE(scores); FT_FREE(merges); FT_FREE(ml);
    return r;
}

static ft_tensor *ft__peft_linear(ft_ctx *ctx, ft_peft *p, ft_tensor *x, ft_tensor *W, ft_tensor *bias, int64_t l, int which);
static void ft__peft_detach(ft_peft *p);
static ft_tensor *ft__peft_after(ft_ctx *ctx, ft_model *m, int64_t l, int place, ft_tensor *y);
static ft_tensor *ft__peft_embed(ft_ctx *ctx, ft_model *m, const int32_t *ids, int64_t n);
static int64_t ft__peft_tokens(const ft_peft *p, int prefix, int only_enabled);   /* prefix / prompt length */
static ft_tensor *ft__peft_prefix(ft_ctx *ctx, ft_peft *p);
static ft_tensor *ft__peft_prompt(ft_ctx *ctx, ft_peft *p);

static ft_result ft__model_key_int(const ft_model *m, const char *suffix, int64_t *out, int required, int64_t def) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", m->c.arch_name, suffix);
    if (ft_gguf_get_int(m->g, key, out)) {
        if (*out < 0 || *out > ((int64_t)1 << 31)) return ft_set_error(FT_ERR_FORMAT, "%s: %s = %lld is out of range", ft_gguf_path(m->g), key, (long long)*out);
        return FT_OK;
    }
    if (required) return ft_set_error(FT_ERR_FORMAT, "%s: missing metadata key %s", ft_gguf_path(m->g), key);
    *out = def;
    return FT_OK;
}
static float ft__model_key_float(const ft_model *m, const char *suffix, float def) {
    char key[128]; double v;
    snprintf(key, sizeof key, "%s.%s", m->c.arch_name, suffix);
    return ft_gguf_get_float(m->g, key, &v) ? (float)v : def;
}

/* ---- NF4 weights in GGUF ---------------------------------------------------------------------
   GGUF has no NF4 type, so an NF4 weight W (out, in) is five standard tensors:
     <name>             I8  [in/2, out]     the packed nibbles (row-major, first weight high)
     <name>.nf4_absmax  I8  [ceil(n/64)]    the 8-bit codes of absmax - offset (as bytes)
     <name>.nf4_absmax2 F32 [ceil(n/16384)] the second-level scales
     <name>.nf4_offset  F32 [1]             the mean of the absmax
     <name>.nf4_code    F32 [256]           the dynamic map of the codes
   with the key finetune.quantization = "nf4" (and finetune.nf4.block_size 64,
   finetune.nf4.block_size2 256). Any GGUF reader parses it; ft_model_load points the weight at
   the mapped bytes (no copy, no requantization). */
static const char *const ft__nf4_suffix[4] = {".nf4_absmax", ".nf4_absmax2", ".nf4_offset", ".nf4_code"};

/* is tensor gt (a 2-D weight) stored as NF4? its companions exist, or the file says NF4 and gt is I8 */
static int ft__gguf_is_nf4(const ft_gguf *g, const ft_gguf_tensor *gt) {
    char nm[256]; ft_gguf_str q;
    snprintf(nm, sizeof nm, "%.*s%s", (int)FT__MIN(gt->name.n, 200), gt->name.s, ft__nf4_suffix[0]);
    if (ft_gguf_find_tensor(g, nm)) return 1;
    return gt->type == FT_TYPE_I8 && ft_gguf_get_str(g, "finetune.quantization", &q) && q.n == 3 && memcmp(q.s, "nf4", 3) == 0;
}
/* the state of NF4 weight gt (logical shape (ne1, ne0)) from its companions, every size, type,
   alignment and value checked */
static ft_result ft__gguf_nf4_state(const ft_gguf *g, const ft_gguf_tensor *gt, int64_t ne0, int64_t ne1, ft_nf4 *st) {
    const char *path = ft_gguf_path(g);
    int nl = (int)FT__MIN(gt->name.n, 200), k; int64_t n = ne0 * ne1, want[4], i;
    const ft_gguf_tensor *c[4]; char nm[256];
    want[0] = ft_nf4_blocks(n); want[1] = ft_nf4_blocks2(n); want[2] = 1; want[3] = 256;
    if (ne0 % 2 || gt->type != FT_TYPE_I8 || gt->n_dims != 2 || gt->ne[0] != ne0 / 2 || gt->ne[1] != ne1)
        return ft_set_error(FT_ERR_FORMAT, "%s: NF4 tensor '%.*s' is %s [%lld, %lld], expected the packed nibbles as i8 [%lld, %lld]",
                            path, nl, gt->name.s, ft_type_name(gt->type), (long long)gt->ne[0], (long long)(gt->n_dims > 1 ? gt->ne[1] : 0),
                            (long long)(ne0 / 2), (long long)ne1);
    for (k = 0; k < 4; k++) {
        ft_type ty = k == 0 ? FT_TYPE_I8 : FT_TYPE_F32;
        snprintf(nm, sizeof nm, "%.*s%s", nl, gt->name.s, ft__nf4_suffix[k]);
        if (!(c[k] = ft_gguf_find_tensor(g, nm)))
            return ft_set_error(FT_ERR_FORMAT, "%s: NF4 tensor '%.*s' has no '%s'", path, nl, gt->name.s, nm);
        if (c[k]->type != ty || c[k]->n_dims != 1 || c[k]->ne[0] != want[k])
            return ft_set_error(FT_ERR_FORMAT, "%s: '%s' is %s [%lld]%s, expected %s [%lld] for %lld weights", path, nm, ft_type_name(c[k]->type),
                                (long long)c[k]->ne[0], c[k]->n_dims != 1 ? " (not 1-D)" : "", ft_type_name(ty), (long long)want[k], (long long)n);
        if (k && (uintptr_t)c[k]->data % 4)
            return ft_set_error(FT_ERR_FORMAT, "%s: '%s' is not 4-byte aligned in the file", path, nm);
        for (i = 0; k && i < want[k]; i++)
            if (!(fabsf(FT__CAST(const float *, c[k]->data)[i]) <= FLT_MAX))
                return ft_set_error(FT_ERR_FORMAT, "%s: '%s'[%lld] is not finite", path, nm, (long long)i);
    }
    st->qabsmax = FT__CAST(const uint8_t *, c[0]->data);
    st->absmax2 = FT__CAST(const float *, c[1]->data);
    st->offset = *FT__CAST(const float *, c[2]->data);
    st->code = FT__CAST(const float *, c[3]->data);
    return FT_OK;
}

/* the linear weights of layer l (7 slots) */
static ft_tensor **ft__layer_linear(ft_layer *L, int k) {
    ft_tensor **s[7];
    s[0] = &L->wq; s[1] = &L->wk; s[2] = &L->wv; s[3] = &L->wo; s[4] = &L->w_gate; s[5] = &L->w_up; s[6] = &L->w_down;
    return s[k];
}
static size_t ft__up64(size_t x) { return (x + 63) & ~(size_t)63; }
static size_t ft__nf4_bytes(int64_t n) {      /* packed, codes, scales: each 64-byte aligned  */
    return ft__up64((size_t)(n + 1) / 2) + ft__up64((size_t)ft_nf4_blocks(n)) + ft__up64((size_t)ft_nf4_blocks2(n) * 4);
}
/* the i-th weight to quantize, i < ft__quant_count: 7 per layer, the untied head when `head`,
   then every expert's gate, up, down; NULL where there is none (a layer with experts has no
   dense FFN) */
static int64_t ft__quant_count(const ft_model *m) { return 7 * m->c.n_layer + 1 + 3 * m->c.n_layer * m->c.n_expert; }
static ft_tensor *ft__quant_target(ft_model *m, int64_t i, int head) {
    if (i < 7 * m->c.n_layer) return *ft__layer_linear(&m->layers[i / 7], (int)(i % 7));
    if (i == 7 * m->c.n_layer) return head && !m->c.tied_embeddings ? m->output : NULL;
    return m->expert_ptrs ? m->expert_ptrs[i - 7 * m->c.n_layer - 1] : NULL;
}
/* the NF4 state slot of a model weight (experts have their own array) */
static ft_nf4 *ft__nf4_slot(ft_model *m, const ft_tensor *W) {
    return W >= m->w && W < m->w + m->n_w ? &m->nf4[W - m->w] : &m->expert_nf4[W - m->experts];
}
/* every linear weight (and the untied head when `head`) that is not NF4 yet -> NF4, all in one
   owned block: each decoded to f32 whole (one scratch buffer, the size of the largest), then
   quantized */
static ft_result ft__model_quantize_nf4(ft_model *m, int head) {
    int64_t i, maxn = 0; size_t total = 0, off = 0; float *tmp; ft_result r = FT_OK; ft_tensor *W;
    for (i = 0; i < ft__quant_count(m); i++)
        if ((W = ft__quant_target(m, i, head)) != NULL && W->type != FT_TYPE_NF4) { total += ft__nf4_bytes(ft_numel(W)); maxn = FT__MAX(maxn, ft_numel(W)); }
    if (!total) return FT_OK;
    m->nf4_data = FT__CAST(unsigned char *, ft__aligned_alloc(total));
    tmp = FT__CAST(float *, ft__aligned_alloc((size_t)maxn * sizeof(float)));
    if (!m->nf4_data || !tmp) { ft__aligned_free(tmp); return ft_set_error(FT_ERR_NOMEM, "nf4: out of memory (%zu MiB)", total >> 20); }
    ft_nf4_dynamic_map(m->nf4_code);
    for (i = 0; i < ft__quant_count(m) && r == FT_OK; i++) {
        ft_nf4 *st; int64_t n, o; uint8_t *p, *qa; float *a2;
        if (!(W = ft__quant_target(m, i, head)) || W->type == FT_TYPE_NF4) continue;
        st = ft__nf4_slot(m, W); n = ft_numel(W);
        p = m->nf4_data + off; qa = p + ft__up64((size_t)(n + 1) / 2);
        a2 = FT__CAST(float *, FT__CAST(void *, qa + ft__up64((size_t)ft_nf4_blocks(n))));
        for (o = 0; o < W->shape[0]; o++) ft__weight_row(W, o, 0, W->shape[1], tmp + o * W->shape[1]);
        if ((r = ft_quantize_nf4(tmp, n, p, qa, a2, &st->offset)) != FT_OK) { r = ft_set_error(r, "%s: %s", W->name, ft_last_error()); break; }
        st->qabsmax = qa; st->absmax2 = a2; st->code = m->nf4_code;
        W->type = FT_TYPE_NF4; W->data = p; W->nf4 = st;
        off += ft__nf4_bytes(n);
    }
    ft__aligned_free(tmp);
    return r;
}

FT_API int64_t ft_model_linear_bytes(const ft_model *m, int64_t *n_weights) {
    int64_t i, bytes = 0, nw = 0;
    for (i = 0; i < ft__quant_count(m); i++) {      /* the blocks' linear weights and experts */
        const ft_tensor *W = ft__quant_target(FT__CAST(ft_model *, m), i, 0);
        int64_t n;
        if (!W) continue;
        n = ft_numel(W);
        nw += n;
        if (W->type == FT_TYPE_NF4) bytes += (n + 1) / 2 + ft_nf4_blocks(n) + 4 * ft_nf4_blocks2(n) + 4;
        else bytes += (int64_t)ft_type_row_bytes(W->type, W->shape[1]) * W->shape[0];
    }
    if (n_weights) *n_weights = nw;
    return bytes;
}

static int ft__ends_with(const ft_gguf_str *s, const char *suf) {
    size_t k = strlen(suf);
    return s->n >= k && memcmp(s->s + s->n - k, suf, k) == 0;
}
FT_API ft_result ft_model_save_gguf(const ft_model *m, const char *path) {
    ft_gguf_writer *w; ft_result r = FT_OK; int64_t i, j, any = 0; char nm[256];
    if ((r = ft_gguf_writer_init(&w)) != FT_OK) return r;
    for (i = 0; i < m->n_w; i++) any += m->w[i].type == FT_TYPE_NF4;
    for (i = 0; i < ft_gguf_n_kv(m->g) && r == FT_OK; i++) {
        const ft_gguf_kv *kv = ft_gguf_kv_at(m->g, i);
        int ours = (kv->key.n == 21 && memcmp(kv->key.s, "finetune.quantization", 21) == 0) ||
                   (kv->key.n > 13 && memcmp(kv->key.s, "finetune.nf4.", 13) == 0);
        if (!ours) r = ft_gguf_copy_kv(w, kv);       /* ours: written below when there is NF4 */
    }
    if (any && r == FT_OK) r = ft_gguf_set_str(w, "finetune.quantization", "nf4");
    if (any && r == FT_OK) r = ft_gguf_set_int(w, "finetune.nf4.block_size", FT_GGUF_UINT32, FT_NF4_BLOCK);
    if (any && r == FT_OK) r = ft_gguf_set_int(w, "finetune.nf4.block_size2", FT_GGUF_UINT32, FT_NF4_BLOCK2);
    for (i = 0; i < ft_gguf_n_tensors(m->g) && r == FT_OK; i++) {
        const ft_gguf_tensor *gt = ft_gguf_tensor_at(m->g, i); const ft_tensor *W = NULL; int k;
        for (k = 0; k < 4; k++) if (ft__ends_with(&gt->name, ft__nf4_suffix[k])) break;
        if (k < 4) continue;                          /* companions go with their weight       */
        for (j = 0; j < m->n_w && !W; j++)
            if (gt->name.n == strlen(m->w[j].name) && memcmp(gt->name.s, m->w[j].name, (size_t)gt->name.n) == 0) W = &m->w[j];
        if (W && W->type == FT_TYPE_NF4) {
            int64_t n = ft_numel(W), ne[2], one = 1, c256 = 256;
            const void *data[4]; int64_t len[4];
            if (W->shape[1] % 2) {                    /* [in/2, out] cannot hold it        */
                r = ft_set_error(FT_ERR_UNSUPPORTED, "%s: NF4 weight '%s' has an odd row length (%lld)", path, W->name, (long long)W->shape[1]);
                break;
            }
            ne[0] = W->shape[1] / 2; ne[1] = W->shape[0];
            if ((r = ft_gguf_add_tensor(w, W->name, FT_TYPE_I8, 2, ne, W->data)) != FT_OK) break;
            data[0] = W->nf4->qabsmax; len[0] = ft_nf4_blocks(n);
            data[1] = W->nf4->absmax2; len[1] = ft_nf4_blocks2(n);
            data[2] = &W->nf4->offset; len[2] = one;
            data[3] = W->nf4->code; len[3] = c256;
            for (k = 0; k < 4 && r == FT_OK; k++) {
                snprintf(nm, sizeof nm, "%s%s", W->name, ft__nf4_suffix[k]);
                r = ft_gguf_add_tensor(w, nm, k ? FT_TYPE_F32 : FT_TYPE_I8, 1, &len[k], data[k]);
            }
        } else {
            snprintf(nm, sizeof nm, "%.*s", (int)FT__MIN(gt->name.n, 255), gt->name.s);
            r = ft_gguf_add_tensor(w, nm, gt->type, gt->n_dims, gt->ne, gt->data);
        }
    }
    if (r == FT_OK) r = ft_gguf_write(w, path);
    ft_gguf_writer_free(w);
    return r;
}

/* a weight header over the mapped data; ne0 = row length (in), ne1 = rows (out; 0 for 1-D) */
static ft_result ft__model_bind(ft_model *m, ft_tensor **dst, const char *name, int64_t ne0, int64_t ne1, int required) {
    const ft_gguf_tensor *gt = ft_gguf_find_tensor(m->g, name);
    ft_tensor *t; int nf4; ft_result r;
    *dst = NULL;
    if (!gt) return required ? ft_set_error(FT_ERR_FORMAT, "%s: missing tensor '%s'", ft_gguf_path(m->g), name) : FT_OK;
    nf4 = ne1 ? ft__gguf_is_nf4(m->g, gt) : 0;
    if (nf4) {                                    /* packed nibbles + companions, checked      */
        if ((r = ft__gguf_nf4_state(m->g, gt, ne0, ne1, &m->nf4[m->n_w])) != FT_OK) return r;
    } else {
        if (gt->ne[0] != ne0 || (ne1 ? (gt->n_dims != 2 || gt->ne[1] != ne1) : gt->n_dims != 1))
            return ft_set_error(FT_ERR_SHAPE, "%s: tensor '%s' has shape [%lld, %lld], expected [%lld, %lld]", ft_gguf_path(m->g), name,
                                (long long)gt->ne[0], (long long)(gt->n_dims > 1 ? gt->ne[1] : 0), (long long)ne0, (long long)ne1);
        if (!ft__type(gt->type)->to_f32)
            return ft_set_error(FT_ERR_UNSUPPORTED, "%s: tensor '%s' has type %s, which this build cannot compute with", ft_gguf_path(m->g), name, ft_type_name(gt->type));
    }
    t = &m->w[m->n_w++];
    memset(t, 0, sizeof *t);
    t->type = gt->type;
    if (nf4) { t->type = FT_TYPE_NF4; t->nf4 = &m->nf4[t - m->w]; }
    t->name = m->names + m->names_len;            /* a NUL-terminated copy for messages        */
    memcpy(m->names + m->names_len, gt->name.s, (size_t)gt->name.n);
    m->names[m->names_len + gt->name.n] = 0;
    m->names_len += (size_t)gt->name.n + 1;
    t->data = FT__CAST(void *, gt->data);
    if (ne1) { t->ndim = 2; t->shape[0] = ne1; t->shape[1] = ne0; }
    else { t->ndim = 1; t->shape[0] = ne0; }
    t->shape[2] = t->shape[3] = 1;
    *dst = t;
    return FT_OK;
}

/* ---- the architectures: each a row of differences from llama -----------------------------------
   Everything else (the metadata keys, the tensor names, the forward) is shared. */
typedef struct ft__arch_row {
    const char *name; ft_arch arch; int rope_type;
    unsigned char qkv_bias, qk_norm, post_norms, gelu, embd_scale, fused, swa_pattern, moe_norm;
    float router_aux;               /* the load-balancing loss weight of its Hugging Face config */
} ft__arch_row;
static const ft__arch_row ft__archs[] = {
    /* name       arch              RoPE          qkv bias  q/k norm  post norms  GeGLU  embd x sqrt(C)  fused  SWA pattern  MoE renorm  aux loss */
    {"llama",    FT_ARCH_LLAMA,    FT_ROPE_NORM, 0,        0,        0,          0,     0,               0,     0,           1, 0.001f},
    {"mistral",  FT_ARCH_MISTRAL,  FT_ROPE_NORM, 0,        0,        0,          0,     0,               0,     0,           1, 0.001f},
    {"qwen2",    FT_ARCH_QWEN2,    FT_ROPE_NEOX, 1,        0,        0,          0,     0,               0,     0,           0, 0.001f},
    {"qwen3",    FT_ARCH_QWEN3,    FT_ROPE_NEOX, 0,        1,        0,          0,     0,               0,     0,           0, 0.001f},
    {"gemma3",   FT_ARCH_GEMMA3,   FT_ROPE_NEOX, 0,        1,        1,          1,     1,               0,     6,           0, 0.001f},
    {"phi3",     FT_ARCH_PHI3,     FT_ROPE_NEOX, 0,        0,        0,          0,     0,               1,     0,           0, 0.001f},
    {"qwen3moe", FT_ARCH_QWEN3MOE, FT_ROPE_NEOX, 0,        1,        0,          0,     0,               0,     0,           1, 0.001f},
    {"olmoe",    FT_ARCH_OLMOE,    FT_ROPE_NEOX, 0,        2,        0,          0,     0,               0,     0,           0, 0.01f},
};
/* the SWA pattern: 5 of every 6 layers slide (l % 6 < 5) unless the file says otherwise, either
   as a pattern n or as one flag per layer (attention.sliding_window_pattern, as llama.cpp) */
static ft_result ft__model_swa(ft_model *m, const char *path, int pattern) {
    ft_model_config *c = &m->c; const ft_gguf_kv *kv; char key[128]; int64_t l, v;
    m->swa = FT__CAST(unsigned char *, FT_MALLOC((size_t)c->n_layer));
    if (!m->swa) return ft_set_error(FT_ERR_NOMEM, "%s: out of memory", path);
    memset(m->swa, 0, (size_t)c->n_layer);
    if (ft__model_key_int(m, "attention.sliding_window", &c->swa_window, 0, 0) != FT_OK || !c->swa_window || !pattern) { c->swa_window = 0; return FT_OK; }
    snprintf(key, sizeof key, "%s.attention.sliding_window_pattern", c->arch_name);
    kv = ft_gguf_find(m->g, key);
    if (kv && kv->type == FT_GGUF_ARRAY) {
        if ((int64_t)kv->n != c->n_layer) return ft_set_error(FT_ERR_FORMAT, "%s: %s has %llu flags for %lld layers", path, key, (unsigned long long)kv->n, (long long)c->n_layer);
        for (l = 0; l < c->n_layer; l++) m->swa[l] = ft_gguf_kv_int(kv, (uint64_t)l) != 0;
    } else {
        if (ft_gguf_get_int(m->g, key, &v)) pattern = (int)FT__MIN(FT__MAX(v, 0), 1 << 20);
        for (l = 0; l < c->n_layer; l++) m->swa[l] = pattern == 0 || l % pattern < pattern - 1;
    }
    for (l = 0; l < c->n_layer; l++) c->n_swa_layers += m->swa[l];
    c->rope_base_swa = ft__model_key_float(m, "rope.freq_base_swa", 10000.0f);
    return FT_OK;
}
/* frequency factors (n_rot / 2), each > 0 and finite */
static ft_result ft__model_factors(const ft_model *m, const ft_tensor *t, const char *path) {
    int64_t i;
    if (t->shape[0] != m->c.n_rot / 2) return ft_set_error(FT_ERR_SHAPE, "%s: %s has %lld factors for %lld rotated dims", path, t->name, (long long)t->shape[0], (long long)m->c.n_rot);
    for (i = 0; i < m->c.n_rot / 2; i++)
        if (!(FT__F(t)[i] > 0.0f) || !(FT__F(t)[i] < 1e30f)) return ft_set_error(FT_ERR_FORMAT, "%s: %s[%lld] = %g", path, t->name, (long long)i, FT__F(t)[i]);
    return FT_OK;
}
/* RoPE's scaling from rope.scaling.* (linear, yarn; llama.cpp's defaults), a rope_freqs tensor
   (llama3) or LongRoPE's short and long factors (phi3: the long ones once a forward's positions
   pass the original context, as transformers picks them); rope.scaling.attn_factor scales every
   rotation, as llama.cpp applies it */
static ft_result ft__model_rope(ft_model *m, const char *path) {
    ft_model_config *c = &m->c; ft_gguf_str st; char key[128]; float factor; int64_t v; ft_result r;
    memset(&c->rope, 0, sizeof c->rope);
    c->rope.n_rot = (int)c->n_rot; c->rope.mode = c->rope_type; c->rope.base = c->rope_base;
    c->rope.attn_factor = ft__model_key_float(m, "rope.scaling.attn_factor", 1.0f);
    if (!(c->rope.attn_factor > 0.0f) || !(c->rope.attn_factor < 1e6f)) return ft_set_error(FT_ERR_FORMAT, "%s: rope.scaling.attn_factor = %g", path, c->rope.attn_factor);
    snprintf(c->rope_scaling, sizeof c->rope_scaling, "none");
    snprintf(key, sizeof key, "%s.rope.scaling.type", c->arch_name);
    if (ft_gguf_get_str(m->g, key, &st) && !(st.n == 4 && memcmp(st.s, "none", 4) == 0)) {
        int lin = st.n == 6 && memcmp(st.s, "linear", 6) == 0, yarn = st.n == 4 && memcmp(st.s, "yarn", 4) == 0;
        if (!lin && !yarn) return ft_set_error(FT_ERR_UNSUPPORTED, "%s: %s = '%.*s' is not supported (linear, yarn are)", path, key, (int)FT__MIN(st.n, 32), st.s);
        factor = ft__model_key_float(m, "rope.scaling.factor", 0.0f);
        if (!(factor >= 1.0f) || factor > 1e6f) return ft_set_error(FT_ERR_FORMAT, "%s: %s.rope.scaling.factor = %g (needs >= 1)", path, c->arch_name, factor);
        c->rope.freq_scale = 1.0f / factor;
        snprintf(c->rope_scaling, sizeof c->rope_scaling, "%s", lin ? "linear" : "yarn");
        if (yarn) {
            if (ft__model_key_int(m, "rope.scaling.original_context_length", &v, 0, c->n_ctx_train) != FT_OK || v < 1) return ft_set_error(FT_ERR_FORMAT, "%s: YaRN needs an original context length", path);
            c->rope.n_ctx_orig = v;
            c->rope.ext_factor = 1.0f;
        }
    }
    if (m->rope_freqs) {
        if ((r = ft__model_factors(m, m->rope_freqs, path)) != FT_OK) return r;
        c->rope.freq_factors = FT__F(m->rope_freqs);
        if (!strcmp(c->rope_scaling, "none")) snprintf(c->rope_scaling, sizeof c->rope_scaling, "llama3");
    } else if (m->rope_short || m->rope_long) {
        if (!m->rope_short || !m->rope_long) return ft_set_error(FT_ERR_FORMAT, "%s: LongRoPE needs both rope_factors_short and rope_factors_long", path);
        if ((r = ft__model_factors(m, m->rope_short, path)) != FT_OK || (r = ft__model_factors(m, m->rope_long, path)) != FT_OK) return r;
        if (ft__model_key_int(m, "rope.scaling.original_context_length", &v, 0, c->n_ctx_train) != FT_OK || v < 1) return ft_set_error(FT_ERR_FORMAT, "%s: LongRoPE needs an original context length", path);
        c->rope.n_ctx_orig = v;
        c->rope.freq_factors = FT__F(m->rope_short);
        snprintf(c->rope_scaling, sizeof c->rope_scaling, "longrope");
    }
    return FT_OK;
}
/* the architecture and its sizes from the metadata (<arch>.* keys), checked for consistency */
static ft_result ft__model_config(ft_model *m, const char *path) {
    ft_model_config *c = &m->c; ft_gguf_str arch = {NULL, 0}; const ft_gguf_tensor *te; const ft__arch_row *row = NULL; int64_t v; size_t i;
#define FT__TRY(x) do { ft_result r_ = (x); if (r_ != FT_OK) return r_; } while (0)
    if (!ft_gguf_get_str(m->g, "general.architecture", &arch) || arch.n >= sizeof c->arch_name)
        return ft_set_error(FT_ERR_FORMAT, "%s: missing general.architecture", path);
    memcpy(c->arch_name, arch.s, (size_t)arch.n); c->arch_name[arch.n] = 0;
    for (i = 0; i < sizeof ft__archs / sizeof ft__archs[0]; i++) if (!strcmp(c->arch_name, ft__archs[i].name)) row = &ft__archs[i];
    if (!row) return ft_set_error(FT_ERR_UNSUPPORTED, "%s: architecture '%s' is not supported (llama, mistral, qwen2, qwen3, gemma3, phi3, qwen3moe, olmoe are)", path, c->arch_name);
    c->arch = row->arch; c->rope_type = row->rope_type; c->qkv_bias = row->qkv_bias; c->qk_norm = row->qk_norm;
    c->post_norms = row->post_norms; c->ffn_gelu = row->gelu; c->fused = row->fused; c->moe_norm = row->moe_norm;
    FT__TRY(ft__model_key_int(m, "embedding_length", &c->n_embd, 1, 0));
    FT__TRY(ft__model_key_int(m, "block_count", &c->n_layer, 1, 0));
    if (c->n_layer > ft_gguf_n_tensors(m->g))            /* checked before allocating per layer */
        return ft_set_error(FT_ERR_FORMAT, "%s: block_count %lld, but the file holds %lld tensors", path, (long long)c->n_layer, (long long)ft_gguf_n_tensors(m->g));
    FT__TRY(ft__model_key_int(m, "feed_forward_length", &c->n_ff, 1, 0));
    FT__TRY(ft__model_key_int(m, "attention.head_count", &c->n_head, 1, 0));
    FT__TRY(ft__model_key_int(m, "attention.head_count_kv", &c->n_head_kv, 0, c->n_head));
    FT__TRY(ft__model_key_int(m, "context_length", &c->n_ctx_train, 0, 2048));
    if (c->n_head < 1 || c->n_head_kv < 1 || c->n_head % c->n_head_kv || c->n_embd < 1 || c->n_layer < 1 || c->n_ff < 1)
        return ft_set_error(FT_ERR_FORMAT, "%s: inconsistent sizes (embd %lld, heads %lld/%lld, layers %lld)", path,
                            (long long)c->n_embd, (long long)c->n_head, (long long)c->n_head_kv, (long long)c->n_layer);
    FT__TRY(ft__model_key_int(m, "attention.key_length", &c->head_dim, 0, c->n_embd / c->n_head));
    FT__TRY(ft__model_key_int(m, "attention.value_length", &v, 0, c->head_dim));
    FT__TRY(ft__model_key_int(m, "rope.dimension_count", &c->n_rot, 0, c->head_dim));
    if (c->head_dim < 2 || c->n_rot > c->head_dim || c->n_rot % 2 || v != c->head_dim)
        return ft_set_error(FT_ERR_FORMAT, "%s: head dim %lld (values %lld), rope dims %lld do not fit", path, (long long)c->head_dim, (long long)v, (long long)c->n_rot);
    c->rope_base = ft__model_key_float(m, "rope.freq_base", 10000.0f);
    c->rms_eps = ft__model_key_float(m, "attention.layer_norm_rms_epsilon", 1e-5f);
    c->embd_scale = row->embd_scale ? sqrtf((float)c->n_embd) : 1.0f;
    /* gemma_pytorch's query_pre_attn_scalar: n_embd / n_head for the 27B (62 layers), as llama.cpp */
    c->attn_scale = 1.0f / sqrtf((float)(c->arch == FT_ARCH_GEMMA3 && c->n_layer == 62 ? c->n_embd / c->n_head : c->head_dim));
    c->logit_softcap = ft__model_key_float(m, "final_logit_softcapping", 0.0f);
    FT__TRY(ft__model_swa(m, path, row->swa_pattern));
    FT__TRY(ft__model_key_int(m, "expert_count", &c->n_expert, 0, 0));
    FT__TRY(ft__model_key_int(m, "expert_used_count", &c->n_expert_used, 0, 0));
    FT__TRY(ft__model_key_int(m, "expert_feed_forward_length", &c->n_ff_exp, 0, c->n_ff));
    if (c->n_expert && (c->n_expert_used < 1 || c->n_expert_used > c->n_expert || c->n_expert > 4096 || c->fused))
        return ft_set_error(FT_ERR_FORMAT, "%s: %lld experts, %lld used per token", path, (long long)c->n_expert, (long long)c->n_expert_used);
    te = ft_gguf_find_tensor(m->g, "token_embd.weight");
    if (!te || te->n_dims != 2) return ft_set_error(FT_ERR_FORMAT, "%s: missing tensor 'token_embd.weight'", path);
    c->n_vocab = te->ne[1];
    if (ft__model_key_int(m, "vocab_size", &v, 0, c->n_vocab) == FT_OK && v != c->n_vocab)
        return ft_set_error(FT_ERR_FORMAT, "%s: vocab_size %lld but token_embd has %lld rows", path, (long long)v, (long long)c->n_vocab);
    return FT_OK;
}
/* t = rows (rows, cols) of file tensor gt from byte off on, named <gt's name>.<suffix> */
static void ft__model_view(ft_model *m, ft_tensor *t, const ft_gguf_tensor *gt, size_t off, int64_t rows, int64_t cols, const char *suffix) {
    memset(t, 0, sizeof *t);
    t->type = gt->type;
    t->name = m->names + m->names_len;
    m->names_len += (size_t)snprintf(m->names + m->names_len, 96, "%.*s.%s", (int)FT__MIN(gt->name.n, 64), gt->name.s, suffix) + 1;
    t->data = FT__CAST(void *, FT__CAST(const unsigned char *, gt->data) + off);
    t->ndim = 2; t->shape[0] = rows; t->shape[1] = cols; t->shape[2] = t->shape[3] = 1;
}
/* a fused weight (phi3's attn_qkv [C, Dq + 2 Dkv], ffn_up [C, 2F]) as n weights over its row
   ranges, named <base>.<part>: views of the file's rows (each row whole blocks), no copy */
static ft_result ft__model_bind_split(ft_model *m, const char *name, int64_t ne0, int n, const int64_t *rows,
                                      const char *const *parts, ft_tensor ***dst) {
    const ft_gguf_tensor *gt = ft_gguf_find_tensor(m->g, name);
    int64_t total = 0, r0 = 0; int i; size_t row_bytes;
    for (i = 0; i < n; i++) total += rows[i];
    if (!gt) return ft_set_error(FT_ERR_FORMAT, "%s: missing tensor '%s'", ft_gguf_path(m->g), name);
    if (ft__gguf_is_nf4(m->g, gt)) return ft_set_error(FT_ERR_UNSUPPORTED, "%s: '%s' is fused and NF4; load the original file with --quantize nf4", ft_gguf_path(m->g), name);
    if (gt->n_dims != 2 || gt->ne[0] != ne0 || gt->ne[1] != total)
        return ft_set_error(FT_ERR_SHAPE, "%s: tensor '%s' has shape [%lld, %lld], expected [%lld, %lld]", ft_gguf_path(m->g), name,
                            (long long)gt->ne[0], (long long)(gt->n_dims > 1 ? gt->ne[1] : 0), (long long)ne0, (long long)total);
    if (!ft__type(gt->type)->to_f32)
        return ft_set_error(FT_ERR_UNSUPPORTED, "%s: tensor '%s' has type %s, which this build cannot compute with", ft_gguf_path(m->g), name, ft_type_name(gt->type));
    row_bytes = ft_type_row_bytes(gt->type, ne0);
    for (i = 0; i < n; i++) {
        *dst[i] = &m->w[m->n_w++];
        ft__model_view(m, *dst[i], gt, (size_t)r0 * row_bytes, rows[i], ne0, parts[i]);
        r0 += rows[i];
    }
    return FT_OK;
}
/* a layer's experts: the 3-D tensors ffn_{gate,up,down}_exps [ne0, ne1, E] as E 2-D views
   (ne1, ne0) each, named <tensor>.<e>; and the router ffn_gate_inp [C, E] */
static ft_result ft__model_experts(ft_model *m, int64_t l) {
    static const char *const nm[3] = {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"};
    ft_model_config *c = &m->c; ft_layer *L = &m->layers[l]; int64_t E = c->n_expert, C = c->n_embd, F = c->n_ff_exp, e;
    char name[96]; int k; ft_result r;
    snprintf(name, sizeof name, "blk.%d.ffn_gate_inp.weight", (int)l);
    if ((r = ft__model_bind(m, &L->router, name, C, E, 0)) != FT_OK || !L->router) return r;
    L->gate_exps = m->expert_ptrs + l * 3 * E; L->up_exps = L->gate_exps + E; L->down_exps = L->up_exps + E;
    for (k = 0; k < 3; k++) {
        int64_t ne0 = k == 2 ? F : C, ne1 = k == 2 ? C : F; size_t bytes;
        const ft_gguf_tensor *gt;
        snprintf(name, sizeof name, "blk.%d.%s.weight", (int)l, nm[k]);
        if (!(gt = ft_gguf_find_tensor(m->g, name))) return ft_set_error(FT_ERR_FORMAT, "%s: missing tensor '%s'", ft_gguf_path(m->g), name);
        if (gt->n_dims != 3 || gt->ne[0] != ne0 || gt->ne[1] != ne1 || gt->ne[2] != E)
            return ft_set_error(FT_ERR_SHAPE, "%s: tensor '%s' has %d dims [%lld, %lld, %lld], expected [%lld, %lld, %lld]", ft_gguf_path(m->g), name, (int)gt->n_dims,
                                (long long)gt->ne[0], (long long)(gt->n_dims > 1 ? gt->ne[1] : 0), (long long)(gt->n_dims > 2 ? gt->ne[2] : 0), (long long)ne0, (long long)ne1, (long long)E);
        if (ft__gguf_is_nf4(m->g, gt) || !ft__type(gt->type)->to_f32)
            return ft_set_error(FT_ERR_UNSUPPORTED, "%s: expert tensor '%s' has type %s, which this build cannot compute with", ft_gguf_path(m->g), name, ft_type_name(gt->type));
        bytes = ft_type_row_bytes(gt->type, ne0) * (size_t)ne1;
        for (e = 0; e < E; e++) {
            char idx[24];
            snprintf(idx, sizeof idx, "%d", (int)e);
            m->expert_ptrs[(l * 3 + k) * E + e] = &m->experts[(l * 3 + k) * E + e];
            ft__model_view(m, &m->experts[(l * 3 + k) * E + e], gt, (size_t)e * bytes, ne1, ne0, idx);
        }
    }
    return FT_OK;
}
/* every weight bound to its slot with its shape checked (the architecture's extras too) */
/* layer l's weights (the architecture's extras; phi3's fused ones as views; experts) */
static ft_result ft__model_layer_weights(ft_model *m, int64_t l) {
    ft_model_config *c = &m->c; ft_layer *L = &m->layers[l]; char name[96];
    int64_t C = c->n_embd, Dq = c->n_head * c->head_dim, Dkv = c->n_head_kv * c->head_dim, F = c->n_ff, D = c->head_dim;
    int bias = c->qkv_bias, qkn = c->qk_norm != 0, post = c->post_norms, dense;
    int64_t Dqn = c->qk_norm == 2 ? Dq : D, Dkn = c->qk_norm == 2 ? Dkv : D;     /* q/k norm widths */
#define FT__BIND(field, nm, ne0, ne1, req) do { snprintf(name, sizeof name, "blk.%d." nm, (int)l); \
                                          FT__TRY(ft__model_bind(m, &L->field, name, ne0, ne1, req)); } while (0)
    FT__BIND(attn_norm, "attn_norm.weight", C, 0, 1);
    if (c->n_expert) FT__TRY(ft__model_experts(m, l));
    dense = !L->router;
    if (c->fused) {
        static const char *const qkv[3] = {"q", "k", "v"}, *const gu[2] = {"gate", "up"};
        int64_t rq[3], rg[2]; ft_tensor **dq[3], **dg[2];
        rq[0] = Dq; rq[1] = rq[2] = Dkv; rg[0] = rg[1] = F;
        dq[0] = &L->wq; dq[1] = &L->wk; dq[2] = &L->wv; dg[0] = &L->w_gate; dg[1] = &L->w_up;
        snprintf(name, sizeof name, "blk.%d.attn_qkv.weight", (int)l);
        FT__TRY(ft__model_bind_split(m, name, C, 3, rq, qkv, dq));
        snprintf(name, sizeof name, "blk.%d.ffn_up.weight", (int)l);
        FT__TRY(ft__model_bind_split(m, name, C, 2, rg, gu, dg));
    } else {
        FT__BIND(wq, "attn_q.weight", C, Dq, 1);
        FT__BIND(wk, "attn_k.weight", C, Dkv, 1);
        FT__BIND(wv, "attn_v.weight", C, Dkv, 1);
        FT__BIND(w_gate, "ffn_gate.weight", C, F, dense);
        FT__BIND(w_up, "ffn_up.weight", C, F, dense);
    }
    FT__BIND(wo, "attn_output.weight", Dq, C, 1);
    FT__BIND(bq, "attn_q.bias", Dq, 0, bias);
    FT__BIND(bk, "attn_k.bias", Dkv, 0, bias);
    FT__BIND(bv, "attn_v.bias", Dkv, 0, bias);
    FT__BIND(q_norm, "attn_q_norm.weight", Dqn, 0, qkn);
    FT__BIND(k_norm, "attn_k_norm.weight", Dkn, 0, qkn);
    FT__BIND(post_attn_norm, "post_attention_norm.weight", C, 0, post);
    FT__BIND(ffn_norm, "ffn_norm.weight", C, 0, 1);
    FT__BIND(post_ffn_norm, "post_ffw_norm.weight", C, 0, post);
    FT__BIND(w_down, "ffn_down.weight", F, C, dense);
#undef FT__BIND
    return FT_OK;
}
/* every weight bound to its slot with its shape checked */
static ft_result ft__model_weights(ft_model *m, const char *path) {
    ft_model_config *c = &m->c; int64_t v, i, C = c->n_embd, nx = c->n_layer * 3 * c->n_expert;
    m->w = FT__CAST(ft_tensor *, FT_MALLOC((size_t)(c->n_layer * 16 + 4) * sizeof(ft_tensor)));
    m->layers = FT__CAST(ft_layer *, FT_MALLOC((size_t)c->n_layer * sizeof(ft_layer)));
    m->nf4 = FT__CAST(ft_nf4 *, FT_MALLOC((size_t)(c->n_layer * 16 + 4) * sizeof(ft_nf4)));
    for (v = 0, i = 0; i < ft_gguf_n_tensors(m->g); i++) v += (int64_t)ft_gguf_tensor_at(m->g, i)->name.n + 1;
    v += (c->fused ? c->n_layer * 5 * 96 : 0) + nx * 96;                   /* the views' names */
    m->names = FT__CAST(char *, FT_MALLOC((size_t)v + 1));
    if (c->n_expert) {
        m->experts = FT__CAST(ft_tensor *, FT_MALLOC((size_t)nx * sizeof(ft_tensor)));
        m->expert_ptrs = FT__CAST(ft_tensor **, FT_MALLOC((size_t)nx * sizeof(ft_tensor *)));
        m->moe_logits = FT__CAST(ft_tensor **, FT_MALLOC((size_t)c->n_layer * sizeof(ft_tensor *)));
        m->expert_nf4 = FT__CAST(ft_nf4 *, FT_MALLOC((size_t)nx * sizeof(ft_nf4)));
        if (!m->experts || !m->expert_ptrs || !m->moe_logits || !m->expert_nf4) return ft_set_error(FT_ERR_NOMEM, "%s: out of memory", path);
        memset(m->expert_ptrs, 0, (size_t)nx * sizeof(ft_tensor *));
    }
    if (!m->w || !m->layers || !m->names || !m->nf4) return ft_set_error(FT_ERR_NOMEM, "%s: out of memory", path);
    memset(m->layers, 0, (size_t)c->n_layer * sizeof(ft_layer));
    memset(m->nf4, 0, (size_t)(c->n_layer * 16 + 4) * sizeof(ft_nf4));
    FT__TRY(ft__model_bind(m, &m->tok_embd, "token_embd.weight", C, c->n_vocab, 1));
    FT__TRY(ft__model_bind(m, &m->output_norm, "output_norm.weight", C, 0, 1));
    FT__TRY(ft__model_bind(m, &m->output, "output.weight", C, c->n_vocab, 0));
    FT__TRY(ft__model_bind(m, &m->rope_freqs, "rope_freqs.weight", c->n_rot / 2, 0, 0));
    FT__TRY(ft__model_bind(m, &m->rope_long, "rope_factors_long.weight", c->n_rot / 2, 0, 0));
    FT__TRY(ft__model_bind(m, &m->rope_short, "rope_factors_short.weight", c->n_rot / 2, 0, 0));
    c->tied_embeddings = m->output == NULL;
    if (!m->output) m->output = m->tok_embd;
    for (i = 0; i < c->n_layer; i++) FT__TRY(ft__model_layer_weights(m, i));
#undef FT__TRY
    return FT_OK;
}
/* 1-D weights (norms, biases) are used as f32 by the ops: any other type widened once */
static ft_result ft__model_widen(ft_model *m, const char *path) {
    int64_t i, n_norm = 0; float *p;
    for (i = 0; i < m->n_w; i++) if (m->w[i].ndim == 1 && m->w[i].type != FT_TYPE_F32) n_norm += m->w[i].shape[0];
    if (!n_norm) return FT_OK;
    p = m->widened = FT__CAST(float *, ft__aligned_alloc((size_t)n_norm * sizeof(float)));
    if (!p) return ft_set_error(FT_ERR_NOMEM, "%s: out of memory", path);
    for (i = 0; i < m->n_w; i++)
        if (m->w[i].ndim == 1 && m->w[i].type != FT_TYPE_F32) {
            ft__type(m->w[i].type)->to_f32(m->w[i].data, p, m->w[i].shape[0]);
            m->w[i].data = p;
            m->w[i].type = FT_TYPE_F32;
            p += m->w[i].shape[0];
        }
    return FT_OK;
}
FT_API ft_result ft_model_load(ft_model **out, const char *path, const ft_model_opts *opts) {
    ft_model *m; ft_result r; int64_t i; ft_gguf_str tmpl;
    *out = NULL;
    if (opts && opts->quantize != FT_TYPE_F32 && opts->quantize != FT_TYPE_NF4)
        return ft_set_error(FT_ERR_UNSUPPORTED, "%s: quantizing at load to %s is not supported (nf4 is)", path, ft_type_name(opts->quantize));
    m = FT__CAST(ft_model *, FT_MALLOC(sizeof *m));
    if (!m) return ft_set_error(FT_ERR_NOMEM, "%s: out of memory", path);
    memset(m, 0, sizeof *m);
    if ((r = ft_gguf_open(&m->g, path)) != FT_OK) { FT_FREE(m); return r; }
    r = ft__model_config(m, path);
    if (r == FT_OK) r = ft__model_weights(m, path);
    if (r == FT_OK) r = ft__model_widen(m, path);
    if (r == FT_OK) r = ft__model_rope(m, path);
    for (i = 0; r == FT_OK && i < m->n_w; i++) m->c.n_params += ft_numel(&m->w[i]);
    for (i = 0; r == FT_OK && m->experts && i < m->c.n_layer * 3 * m->c.n_expert; i++) m->c.n_params += m->expert_ptrs[i] ? ft_numel(m->expert_ptrs[i]) : 0;
    if (r == FT_OK && opts && opts->quantize == FT_TYPE_NF4) r = ft__model_quantize_nf4(m, opts->quantize_output);
    if (r == FT_OK && ft_gguf_get_str(m->g, "tokenizer.chat_template", &tmpl) && !(m->chat_template = ft__strndup(tmpl.s, (size_t)tmpl.n)))
        r = ft_set_error(FT_ERR_NOMEM, "%s: out of memory", path);
    if (r == FT_OK && !m->chat_template && (m->c.arch == FT_ARCH_GEMMA3 || m->c.arch == FT_ARCH_PHI3) &&
        !(m->chat_template = ft__strndup(m->c.arch == FT_ARCH_GEMMA3 ? "gemma" : "phi3", 5)))   /* the family's turns */
        r = ft_set_error(FT_ERR_NOMEM, "%s: out of memory", path);
    if (r == FT_OK) r = ft_tokenizer_from_gguf(&m->tok, m->g);
    if (r != FT_OK) { ft_model_free(m); return r; }
    *out = m;
    return FT_OK;
}

FT_API void ft_model_free(ft_model *m) {
    if (!m) return;
    if (m->peft) ft__peft_detach(m->peft);
    ft_gguf_close(m->g);
    FT_FREE(m->w); FT_FREE(m->layers); FT_FREE(m->names); FT_FREE(m->nf4); FT_FREE(m->swa);
    FT_FREE(m->experts); FT_FREE(m->expert_ptrs); FT_FREE(m->moe_sel); FT_FREE(m->moe_logits); FT_FREE(m->expert_nf4);
    ft_tokenizer_free(m->tok); FT_FREE(m->chat_template);
    ft__aligned_free(m->widened); ft__aligned_free(m->nf4_data);
    { int i; for (i = 0; i < m->n_baked; i++) { FT_FREE(m->baked[i]); ft__aligned_free(m->baked_data[i]); } for (i = 0; i < m->n_baked_params; i++) ft_params_free(m->baked_params[i]); }
    FT_FREE(m);
}
FT_API const ft_model_config *ft_model_config_get(const ft_model *m) { return &m->c; }
FT_API ft_gguf *ft_model_gguf(ft_model *m) { return m->g; }
FT_API ft_layer *ft_model_layer(ft_model *m, int i) { return i >= 0 && i < m->c.n_layer ? &m->layers[i] : NULL; }
FT_API int ft_model_layer_swa(const ft_model *m, int i) { return i >= 0 && i < m->c.n_layer && m->swa ? m->swa[i] : 0; }
FT_API const int32_t *ft_model_moe_choices(const ft_model *m, int i, int64_t *n_tokens) {
    if (i < 0 || i >= m->c.n_layer || !m->layers[i].router || !m->moe_sel) return NULL;
    if (n_tokens) *n_tokens = m->moe_n;
    return m->moe_sel + (int64_t)i * m->moe_n * m->c.n_expert_used;
}
FT_API ft_tensor *ft_model_tok_embd(ft_model *m) { return m->tok_embd; }
FT_API ft_tensor *ft_model_output(ft_model *m) { return m->output; }
FT_API const ft_tokenizer *ft_model_tokenizer(const ft_model *m) { return m->tok; }
FT_API const char *ft_model_chat_template(const ft_model *m) { return m->chat_template; }

/* ---- the KV cache: per layer (n_seq, n_ctx, Hkv*D) keys and values, f32 -------------------- */
struct ft_kv_cache {
    int64_t n_seq, n_ctx, n_layer, kv_dim;
    float *k, *v;                   /* (n_layer, n_seq, n_ctx, kv_dim)                           */
    int64_t *len;                   /* (n_seq) tokens stored per sequence                          */
};
FT_API ft_result ft_kv_cache_init(ft_kv_cache **out, const ft_model *m, int64_t n_seq, int64_t n_ctx) {
    ft_kv_cache *c; size_t n;
    *out = NULL;
    if (n_seq < 1 || n_ctx < 1) return ft_set_error(FT_ERR_INVALID, "kv cache: %lld sequences of %lld tokens", (long long)n_seq, (long long)n_ctx);
    c = FT__CAST(ft_kv_cache *, FT_MALLOC(sizeof *c));
    if (!c) return ft_set_error(FT_ERR_NOMEM, "kv cache: out of memory");
    memset(c, 0, sizeof *c);
    n_ctx += ft__peft_tokens(m->peft, 0, 0);                      /* room for a soft prompt */
    c->n_seq = n_seq; c->n_ctx = n_ctx; c->n_layer = m->c.n_layer; c->kv_dim = m->c.n_head_kv * m->c.head_dim;
    n = (size_t)(c->n_layer * n_seq * n_ctx * c->kv_dim);
    c->k = FT__CAST(float *, ft__aligned_alloc(n * sizeof(float)));
    c->v = FT__CAST(float *, ft__aligned_alloc(n * sizeof(float)));
    c->len = FT__CAST(int64_t *, FT_MALLOC((size_t)n_seq * sizeof(int64_t)));
    if (!c->k || !c->v || !c->len) { ft_kv_cache_free(c); return ft_set_error(FT_ERR_NOMEM, "kv cache: %zu MiB", 2 * n * 4 >> 20); }
    memset(c->len, 0, (size_t)n_seq * sizeof(int64_t));
    *out = c;
    return FT_OK;
}
FT_API void ft_kv_cache_free(ft_kv_cache *c) {
    if (!c) return;
    ft__aligned_free(c->k); ft__aligned_free(c->v); FT_FREE(c->len); FT_FREE(c);
}
FT_API void ft_kv_cache_clear(ft_kv_cache *c, int64_t seq) {
    if (seq < 0) memset(c->len, 0, (size_t)c->n_seq * sizeof(int64_t));
    else if (seq < c->n_seq) c->len[seq] = 0;
}
FT_API int64_t ft_kv_cache_len(const ft_kv_cache *c, int64_t seq) { return seq >= 0 && seq < c->n_seq ? c->len[seq] : 0; }

/* ---- forward ------------------------------------------------------------------------------------- */
/* x W^T (+ bias) for the weight of site `which` of layer l (l < 0: the head); the attached
   PEFT method, if any, takes over */
static ft_tensor *ft__linear(ft_ctx *ctx, ft_model *m, ft_tensor *x, ft_tensor *W, ft_tensor *bias, int64_t l, int which) {
    ft_tensor *y;
    if (m->peft) return ft__peft_linear(ctx, m->peft, x, W, bias, l, which);          /* l < 0: the head */
    y = ft_matmul(ctx, x, W, 0, 1);                            /* x W^T: W is (out, in)        */
    return bias ? ft_add(ctx, y, bias) : y;
}

/* one decoder layer on h (B, T, C): everything it reads besides h */
typedef struct ft__layer_args {
    ft_model *m; int64_t l, B, T, row0;
    const int32_t *p; const int64_t *qoff;  /* positions (B*T); cache offsets (B) with kv     */
    ft_kv_cache *kv;
    ft_attn_opts ao;
    int rope_long;                          /* LongRoPE: this forward reaches past the original context */
} ft__layer_args;
/* q or k of a layer: the projection, the per-head RMSNorm (qwen3, gemma3), RoPE */
static ft_tensor *ft__model_qk(ft_ctx *ctx, ft_model *m, ft_tensor *n, ft_tensor *W, ft_tensor *bias, ft_tensor *norm,
                               int64_t l, int site, int heads, const int32_t *p, const ft_rope_opts *ro) {
    ft_tensor *x = ft__linear(ctx, m, n, W, bias, l, site);
    if (norm && x) {                        /* over each head's D dims (or all): (rows * heads, D) */
        int64_t s2[2], shape[4]; int d;
        for (d = 0; d < x->ndim; d++) shape[d] = x->shape[d];
        s2[0] = ft_numel(x) / norm->shape[0]; s2[1] = norm->shape[0];
        x = ft_reshape(ctx, ft_rmsnorm(ctx, ft_reshape(ctx, x, 2, s2), norm, m->c.rms_eps), x->ndim, shape);
    }
    return ft_rope_ext(ctx, x, p, heads, ro);
}
/* the FFN's activation: SwiGLU, or GeGLU with tanh GELU (gemma3) */
static ft_tensor *ft__model_glu(ft_ctx *ctx, const ft_model *m, ft_tensor *gate, ft_tensor *up) {
    return m->c.ffn_gelu ? ft_mul(ctx, ft_gelu_tanh(ctx, gate), up) : ft_swiglu(ctx, gate, up);
}
static ft_tensor *ft__peft_expert(ft_ctx *ctx, ft_peft *p, ft_tensor *x, ft_tensor *W, int64_t l, int64_t e, int k);
static ft_tensor *ft__peft_router(ft_model *m, int64_t l);
/* x W^T for expert e's gate / up / down (k = 0, 1, 2) of layer l; the attached method may change it */
static ft_tensor *ft__expert_linear(ft_ctx *ctx, ft_model *m, ft_tensor *x, ft_tensor *W, int64_t l, int64_t e, int k) {
    return m->peft ? ft__peft_expert(ctx, m->peft, x, W, l, e, k) : ft_matmul(ctx, x, W, 0, 1);
}
/* each token's top k experts by router logit (descending; the lower id on a tie) into sel
   (N, k), and its row in its expert's batch into row; cnt (E) tokens per expert */
static void ft__moe_route(const float *logits, int64_t N, int64_t E, int64_t k, int32_t *sel, int32_t *row, int32_t *cnt) {
    int64_t n, j, e;
    memset(cnt, 0, (size_t)E * sizeof(int32_t));
    for (n = 0; n < N; n++)
        for (j = 0; j < k; j++) {
            int32_t best = -1;
            for (e = 0; e < E; e++) {
                int64_t q; int taken = 0;
                for (q = 0; q < j; q++) taken |= sel[n * k + q] == e;
                if (!taken && (best < 0 || logits[n * E + e] > logits[n * E + best])) best = (int32_t)e;
            }
            sel[n * k + j] = best;
            row[n * k + j] = cnt[best]++;
        }
}
/* the routing weights (N, k): softmax over all E, taken at the chosen experts, or (moe_norm)
   renormalised over the k - the same as a softmax over the k chosen logits */
static ft_tensor *ft__moe_weights(ft_ctx *ctx, const ft_model *m, ft_tensor *logits, const int32_t *sel, int64_t N) {
    int64_t E = m->c.n_expert, k = m->c.n_expert_used, i, s1[2], s2[2];
    int32_t *idx = FT__CAST(int32_t *, ft__arena_alloc(ctx, (size_t)(N * k) * sizeof(int32_t)));
    ft_tensor *src = m->c.moe_norm ? logits : ft_softmax(ctx, logits), *g;
    if (!idx) return ft__fail(ctx, FT_ERR_NOMEM, "moe: arena out of memory");
    for (i = 0; i < N * k; i++) idx[i] = (int32_t)(i / k * E + sel[i]);
    s1[0] = N * E; s1[1] = 1; s2[0] = N; s2[1] = k;
    g = ft_reshape(ctx, ft_embedding(ctx, ft_reshape(ctx, src, 2, s1), idx, N * k), 2, s2);
    return m->c.moe_norm ? ft_softmax(ctx, g) : g;
}
/* keep the layer's choices (ft_model_moe_choices) and, from a forward with gradients, its router
   logits (the router losses): a later forward without them (a reference model) leaves those be,
   and they count only while the tape they are on lives (the same context, no reset since) */
static int ft__moe_keep(ft_ctx *ctx, ft_model *m, int64_t l, int64_t N, const int32_t *sel, ft_tensor *logits) {
    int64_t k = m->c.n_expert_used, need = m->c.n_layer * N * k;
    if (m->moe_cap < need) {
        int32_t *p = FT__CAST(int32_t *, FT_REALLOC(m->moe_sel, (size_t)need * sizeof(int32_t)));
        if (!p) { ft__fail(ctx, FT_ERR_NOMEM, "moe: out of memory"); return 0; }
        m->moe_sel = p; m->moe_cap = need;
    }
    m->moe_n = N;
    memcpy(m->moe_sel + l * N * k, sel, (size_t)(N * k) * sizeof(int32_t));
    if (!ft__wants(logits)) return 1;
    if (m->moe_ctx != ctx || m->moe_reset != ctx->resets) {       /* a new tape: forget the old */
        memset(m->moe_logits, 0, (size_t)m->c.n_layer * sizeof(ft_tensor *));
        m->moe_ctx = ctx; m->moe_reset = ctx->resets;
    }
    m->moe_logits[l] = logits;
    return 1;
}
/* the mixture-of-experts FFN on h (B, T, C): the router picks each token's k experts, the tokens
   are grouped by expert (each expert runs once, on its tokens: compute scales with k, not E),
   and the k SwiGLU outputs are summed with the routing weights */
static ft_tensor *ft__model_moe(ft_ctx *ctx, ft_model *m, int64_t l, ft_tensor *h) {
    const ft_model_config *c = &m->c; ft_layer *L = &m->layers[l];
    int64_t C = c->n_embd, E = c->n_expert, k = c->n_expert_used, N = ft_numel(h) / C, i, e, s2[2];
    int32_t *sel, *row, *cnt, *off, *tok;
    ft_tensor *x, *logits, *w, **ys;
    s2[0] = N; s2[1] = C;
    x = ft_reshape(ctx, h, 2, s2);
    logits = ft_matmul(ctx, x, ft__peft_router(m, l), 0, 1);                 /* (N, E) */
    sel = FT__CAST(int32_t *, ft__arena_alloc(ctx, (size_t)(4 * N * k + 2 * E + 1) * sizeof(int32_t)));
    ys = FT__CAST(ft_tensor **, ft__arena_alloc(ctx, (size_t)E * sizeof(ft_tensor *)));
    if (!logits || !sel || !ys) return ft__fail(ctx, FT_ERR_NOMEM, "moe: arena out of memory");
    row = sel + N * k; tok = row + N * k; cnt = tok + N * k; off = cnt + E;
    ft__moe_route(FT__F(logits), N, E, k, sel, row, cnt);
    for (off[0] = 0, e = 0; e < E; e++) off[e + 1] = off[e] + cnt[e];
    for (i = 0; i < N * k; i++) tok[off[sel[i]] + row[i]] = (int32_t)(i / k);
    if (!ft__moe_keep(ctx, m, l, N, sel, logits) || !(w = ft__moe_weights(ctx, m, logits, sel, N))) return NULL;
    for (e = 0; e < E; e++) {
        ft_tensor *xe;
        ys[e] = NULL;
        if (!cnt[e]) continue;
        xe = ft_embedding(ctx, x, tok + off[e], cnt[e]);                        /* (n_e, C) */
        ys[e] = ft__expert_linear(ctx, m, ft__model_glu(ctx, m, ft__expert_linear(ctx, m, xe, L->gate_exps[e], l, e, 0),
                                                        ft__expert_linear(ctx, m, xe, L->up_exps[e], l, e, 1)), L->down_exps[e], l, e, 2);
        FT__IN(ys[e]);
    }
    return ft_reshape(ctx, ft_moe_combine(ctx, ys, (int)E, sel, row, w), h->ndim, h->shape);
}
FT_API ft_tensor *ft_moe_aux_loss(ft_ctx *ctx, ft_tensor *const *logits, int n, int k) {
    int64_t N, E, l, e; int32_t *sel, *row, *cnt; ft_tensor *f, *acc = NULL;
    double total = 0;
    if (n < 1 || !logits[0] || logits[0]->ndim != 2) return ft__fail(ctx, FT_ERR_SHAPE, "moe aux loss: no (N, E) logits");
    N = logits[0]->shape[0]; E = logits[0]->shape[1];
    if (k < 1 || k > E) return ft__fail(ctx, FT_ERR_INVALID, "moe aux loss: top-%d of %lld experts", k, (long long)E);
    f = ft_tensor_2d(ctx, 1, E);
    sel = FT__CAST(int32_t *, ft__arena_alloc(ctx, (size_t)(2 * N * k + 2 * E) * sizeof(int32_t)));
    if (!f || !sel) return ft__fail(ctx, FT_ERR_NOMEM, "moe aux loss: arena out of memory");
    row = sel + N * k; cnt = row + N * k;
    memset(f->data, 0, (size_t)E * sizeof(float));
    for (l = 0; l < n; l++) {               /* f: the choices per expert, all layers together */
        FT__IN(logits[l]);
        if (logits[l]->ndim != 2 || logits[l]->shape[0] != N || logits[l]->shape[1] != E) return ft__fail(ctx, FT_ERR_SHAPE, "moe aux loss: layer %lld's logits are not (%lld, %lld)", (long long)l, (long long)N, (long long)E);
        ft__moe_route(FT__F(logits[l]), N, E, k, sel, row, cnt);
        for (e = 0; e < E; e++) FT__F(f)[e] += (float)cnt[e];
    }
    total = (double)n * (double)N;
    for (e = 0; e < E; e++) FT__F(f)[e] = (float)(FT__F(f)[e] / total);
    for (l = 0; l < n; l++) {               /* E / (n N) sum_l sum_{t,e} p[t, e] f[e] */
        ft_tensor *s = ft_sum(ctx, ft_mul(ctx, ft_softmax(ctx, logits[l]), f));
        acc = acc ? ft_add(ctx, acc, s) : s;
    }
    return ft_scale(ctx, acc, (float)((double)E / total));
}
FT_API ft_tensor *ft_moe_z_loss(ft_ctx *ctx, ft_tensor *const *logits, int n) {
    ft_tensor *acc = NULL; int l; int64_t N = 0;
    for (l = 0; l < n; l++) {               /* logsumexp = x0 - log_softmax(x)0, stable */
        ft_tensor *lse, *x = logits[l];
        FT__IN(x);
        if (x->ndim != 2) return ft__fail(ctx, FT_ERR_SHAPE, "moe z loss: logits must be (N, E)");
        lse = ft_slice(ctx, ft_sub(ctx, x, ft_log_softmax(ctx, x)), 1, 0, 1);
        lse = ft_sum(ctx, ft_mul(ctx, lse, lse));
        acc = acc ? ft_add(ctx, acc, lse) : lse;
        N += x->shape[0];
    }
    if (!acc) return ft__fail(ctx, FT_ERR_SHAPE, "moe z loss: no logits");
    return ft_scale(ctx, acc, 1.0f / (float)N);
}
FT_API ft_tensor *ft_model_router_loss(ft_ctx *ctx, ft_model *m, float aux_coef, float z_coef, float *aux, float *z, float *load) {
    ft_tensor **lg, *loss = NULL, *t; int n = 0; int64_t l, e, k = m->c.n_expert_used, E = m->c.n_expert;
    if (!m->c.n_expert || !m->moe_logits || m->moe_ctx != ctx || m->moe_reset != ctx->resets) return NULL;
    lg = FT__CAST(ft_tensor **, ft__arena_alloc(ctx, (size_t)m->c.n_layer * sizeof(ft_tensor *)));
    if (!lg) return ft__fail(ctx, FT_ERR_NOMEM, "router loss: arena out of memory");
    for (l = 0; l < m->c.n_layer; l++) {
        if (!m->layers[l].router || !m->moe_logits[l]) continue;
        lg[n++] = m->moe_logits[l];
        if (load) {                         /* the layer's share of the choices per expert */
            int64_t N = m->moe_logits[l]->shape[0];
            int32_t *sel = FT__CAST(int32_t *, ft__arena_alloc(ctx, (size_t)(2 * N * k + E) * sizeof(int32_t)));
            if (!sel) return ft__fail(ctx, FT_ERR_NOMEM, "router loss: arena out of memory");
            ft__moe_route(FT__F(m->moe_logits[l]), N, E, k, sel, sel + N * k, sel + 2 * N * k);
            for (e = 0; e < E; e++) load[l * E + e] = (float)sel[2 * N * k + e] / (float)(N * k);
        }
    }
    if (!n) return NULL;
    if (aux_coef != 0.0f || aux) {
        t = ft_moe_aux_loss(ctx, lg, n, (int)k); FT__IN(t);
        if (aux) *aux = FT__F(t)[0];
        if (aux_coef != 0.0f) loss = ft_scale(ctx, t, aux_coef);
    }
    if (z_coef != 0.0f || z) {
        t = ft_moe_z_loss(ctx, lg, n); FT__IN(t);
        if (z) *z = FT__F(t)[0];
        if (z_coef != 0.0f) loss = loss ? ft_add(ctx, loss, ft_scale(ctx, t, z_coef)) : ft_scale(ctx, t, z_coef);
    }
    return loss;
}
static ft_tensor *ft__model_layer(ft_ctx *ctx, void *user, ft_tensor *h) {
    const ft__layer_args *A = FT__CAST(const ft__layer_args *, user);
    ft_model *m = A->m; const ft_model_config *c = &m->c; ft_layer *L = &m->layers[A->l];
    ft_kv_cache *kv = A->kv; const int32_t *p = A->p; const int64_t *qoff = A->qoff;
    int64_t l = A->l, B = A->B, T = A->T, row0 = A->row0, Dkv = c->n_head_kv * c->head_dim, b, skv[3];
    ft_tensor *n = ft_rmsnorm(ctx, h, L->attn_norm, c->rms_eps), *q, *k, *v, *a;
    ft_rope_opts ro = c->rope;
    ft_attn_opts ao = A->ao;
    if (A->rope_long) ro.freq_factors = FT__F(m->rope_long);
    if (m->swa[l]) {                        /* a sliding-window layer: its own base, no scaling */
        ro.base = c->rope_base_swa; ro.freq_scale = 1.0f; ro.freq_factors = NULL;
        ao.window = c->swa_window;
    }
    q = ft__model_qk(ctx, m, n, L->wq, L->bq, L->q_norm, l, FT_SITE_Q, (int)c->n_head, p, &ro);
    k = ft__model_qk(ctx, m, n, L->wk, L->bk, L->k_norm, l, FT_SITE_K, (int)c->n_head_kv, p, &ro);
    v = ft__linear(ctx, m, n, L->wv, L->bv, l, FT_SITE_V);
    if (kv && k && v) {                 /* append to the cache; attend over all of it */
        float *K = kv->k + (l * kv->n_seq + row0) * kv->n_ctx * Dkv, *V = kv->v + (l * kv->n_seq + row0) * kv->n_ctx * Dkv;
        for (b = 0; b < B; b++) {
            memcpy(K + (b * kv->n_ctx + qoff[b]) * Dkv, FT__F(k) + b * T * Dkv, (size_t)(T * Dkv) * sizeof(float));
            memcpy(V + (b * kv->n_ctx + qoff[b]) * Dkv, FT__F(v) + b * T * Dkv, (size_t)(T * Dkv) * sizeof(float));
        }
        skv[0] = B; skv[1] = kv->n_ctx; skv[2] = Dkv;
        k = ft__tensor(ctx, FT_TYPE_F32, 3, skv, K);
        v = ft__tensor(ctx, FT_TYPE_F32, 3, skv, V);
    }
    a = ft__peft_after(ctx, m, l, 0, ft__linear(ctx, m, ft_attention(ctx, q, k, v, &ao), L->wo, NULL, l, FT_SITE_O));
    if (L->post_attn_norm) a = ft_rmsnorm(ctx, a, L->post_attn_norm, c->rms_eps);
    h = ft_add(ctx, h, a);
    n = ft_rmsnorm(ctx, h, L->ffn_norm, c->rms_eps);
    if (L->router) a = ft__peft_after(ctx, m, l, 1, ft__model_moe(ctx, m, l, n));
    else {
        a = ft__model_glu(ctx, m, ft__linear(ctx, m, n, L->w_gate, NULL, l, FT_SITE_GATE), ft__linear(ctx, m, n, L->w_up, NULL, l, FT_SITE_UP));
        a = ft__peft_after(ctx, m, l, 1, ft__linear(ctx, m, a, L->w_down, NULL, l, FT_SITE_DOWN));
    }
    if (L->post_ffn_norm) a = ft_rmsnorm(ctx, a, L->post_ffn_norm, c->rms_eps);
    return ft_add(ctx, h, a);
}

/* the decoder stack on token ids (B, T): returns the final normed hidden states (B*T, C).
   pos: positions (B*T) or NULL for 0..T-1 (or the cache lengths with kv); seg: optional
   document ids (B*T) for packed sequences; kv: optional cache for rows [row0, row0 + B).
   With ft_ctx_set_checkpointing on (and no cache) each layer is a checkpointed segment. */
static ft_tensor *ft__model_trunk(ft_ctx *ctx, ft_model *m, const int32_t *ids, int64_t B, int64_t T,
                                  const int32_t *pos, const int32_t *seg, ft_kv_cache *kv, int64_t row0) {
    const ft_model_config *c = &m->c;
    int64_t C = c->n_embd, Dkv = c->n_head_kv * c->head_dim, l, b, t;
    int64_t s3[3], s2[2], NP = 0, PP = 0, T0 = T;
    int32_t *p; int64_t *qoff = NULL;
    ft__layer_args la;
    ft_tensor *h, *ptab = NULL;
    if (B < 1 || T < 1) return ft__fail(ctx, FT_ERR_INVALID, "model: batch %lld x %lld", (long long)B, (long long)T);
    PP = ft__peft_tokens(m->peft, 1, 1);                   /* positions start after a prefix */
    if ((NP = ft__peft_tokens(m->peft, 0, 1)) > 0) {                            /* soft tokens go first */
        if (seg) return ft__fail(ctx, FT_ERR_UNSUPPORTED, "model: prompt tuning does not take packed sequences");
        if (kv) {                                 /* only in front of fresh cache rows */
            int fresh = kv->len[row0] == 0;
            for (b = 1; b < B; b++) if ((kv->len[row0 + b] == 0) != fresh) return ft__fail(ctx, FT_ERR_UNSUPPORTED, "model: prompt tuning: cache rows must all be fresh or all be started");
            if (!fresh) NP = 0;
        }
    }
    T = T0 + NP;
    if (kv && (row0 < 0 || row0 + B > kv->n_seq || kv->n_layer != c->n_layer))
        return ft__fail(ctx, FT_ERR_INVALID, "model: cache rows [%lld, +%lld) outside its %lld sequences", (long long)row0, (long long)B, (long long)kv->n_seq);
    p = FT__CAST(int32_t *, ft__arena_alloc(ctx, (size_t)(B * T) * sizeof(int32_t)));
    if (!p) return ft__fail(ctx, FT_ERR_NOMEM, "model: arena out of memory");
    if (kv) {
        qoff = FT__CAST(int64_t *, ft__arena_alloc(ctx, (size_t)B * sizeof(int64_t)));
        if (!qoff) return ft__fail(ctx, FT_ERR_NOMEM, "model: arena out of memory");
        for (b = 0; b < B; b++) {
            qoff[b] = kv->len[row0 + b];
            if (qoff[b] + T > kv->n_ctx) return ft__fail(ctx, FT_ERR_INVALID, "model: sequence %lld would exceed the cache's %lld tokens", (long long)(row0 + b), (long long)kv->n_ctx);
        }
    }
    for (b = 0; b < B; b++) for (t = 0; t < T; t++)
        p[b * T + t] = (int32_t)PP + (t < NP ? (int32_t)t : pos ? (int32_t)NP + pos[b * T0 + t - NP] : (int32_t)((kv ? qoff[b] : 0) + t));
    memset(&la, 0, sizeof la);
    la.m = m; la.B = B; la.T = T; la.row0 = row0; la.p = p; la.qoff = qoff; la.kv = kv;
    la.ao.n_head = (int)c->n_head; la.ao.n_head_kv = (int)c->n_head_kv; la.ao.causal = 1; la.ao.seg = seg; la.ao.q_offsets = qoff;
    la.ao.scale = c->attn_scale;
    for (b = 0; m->rope_long && b < B * T; b++) la.rope_long |= p[b] + 1 > c->rope.n_ctx_orig;   /* transformers' choice */
    if (ctx->checkpointing && !kv && seg && !(la.ao.seg = ft__copy_ids(ctx, seg, B * T))) return NULL;   /* read again in backward */
    s3[0] = B; s3[1] = T0; s3[2] = C;
    s2[1] = C;
    h = ft_reshape(ctx, ft__peft_embed(ctx, m, ids, B * T0), 3, s3);
    if (c->embd_scale != 1.0f) h = ft_scale(ctx, h, c->embd_scale);        /* gemma: sqrt(n_embd) */
    if (NP) {                               /* (B, NP + T0, C): the soft prompt, then the tokens */
        ft_tensor *z = ft_tensor_3d(ctx, B, NP, C); int64_t s1[3];
        FT__IN(z);
        memset(z->data, 0, (size_t)(B * NP * C) * sizeof(float));
        s1[0] = 1; s1[1] = NP; s1[2] = C;
        h = ft_concat(ctx, ft_add(ctx, z, ft_reshape(ctx, ft__peft_prompt(ctx, m->peft), 3, s1)), h, 1);
    }
    if (PP) ptab = ft__peft_prefix(ctx, m->peft);
    for (l = 0; l < c->n_layer; l++) {
        la.l = l;
        if (ptab) {                         /* this layer's learned prefix keys and values */
            la.ao.prefix_k = ft_slice(ctx, ptab, 1, 2 * l * Dkv, Dkv);
            la.ao.prefix_v = ft_slice(ctx, ptab, 1, (2 * l + 1) * Dkv, Dkv);
        }
        h = ctx->checkpointing && !kv ? ft_checkpoint(ctx, ft__model_layer, &la, sizeof la, h) : ft__model_layer(ctx, &la, h);
    }
    if (kv && h) for (b = 0; b < B; b++) kv->len[row0 + b] += T;
    h = ft_rmsnorm(ctx, h, m->output_norm, c->rms_eps);
    if (NP) h = ft_slice(ctx, h, 1, NP, T0);       /* the real tokens' hidden states */
    s2[0] = B * T0;
    return ft_reshape(ctx, h, 2, s2);
}

FT_API ft_tensor *ft_model_hidden(ft_ctx *ctx, ft_model *m, const ft_batch *bt) {
    return ft__model_trunk(ctx, m, bt->ids, bt->B, bt->T, bt->pos, bt->seg, NULL, 0);
}
/* the head on final hidden states (N, C) -> logits (N, V), soft-capped where the model says */
static ft_tensor *ft__model_head(ft_ctx *ctx, ft_model *m, ft_tensor *h) {
    ft_tensor *y = ft__linear(ctx, m, h, m->output, NULL, -1, 0);
    float cap = m->c.logit_softcap;
    return cap > 0.0f ? ft_scale(ctx, ft_tanh(ctx, ft_scale(ctx, y, 1.0f / cap)), cap) : y;
}
FT_API ft_tensor *ft_model_forward(ft_ctx *ctx, ft_model *m, const ft_batch *bt) {
    return ft__model_head(ctx, m, ft_model_hidden(ctx, m, bt));
}
static int ft__peft_head_plain(const ft_peft *p);
FT_API ft_tensor *ft_model_loss(ft_ctx *ctx, ft_model *m, ft_tensor *h, const int32_t *targets, int per_token) {
    if (!m->peft || ft__peft_head_plain(m->peft))        /* the head as it is in the file */
        return ft_linear_cross_entropy(ctx, h, m->output, targets, -100, m->c.logit_softcap, per_token);
    return per_token ? ft_logprob(ctx, ft__model_head(ctx, m, h), targets, -100) : ft_cross_entropy(ctx, ft__model_head(ctx, m, h), targets, -100);
}

/* T new tokens for each of B sequences in cache rows [row0, row0 + B), no gradients. Returns
   the logits of every new position (B*T, V), or of the last one of each sequence (B, V). */
FT_API ft_tensor *ft_model_decode(ft_ctx *ctx, ft_model *m, ft_kv_cache *kv, int64_t row0,
                                  const int32_t *ids, int64_t B, int64_t T, int last_only) {
    int old = ft_ctx_set_grad(ctx, 0);
    ft_tensor *h = ft__model_trunk(ctx, m, ids, B, T, NULL, NULL, kv, row0), *y = NULL;
    if (h && last_only && T > 1) {          /* keep the last position of each sequence */
        int64_t s3[3], s2[2];
        s3[0] = B; s3[1] = T; s3[2] = m->c.n_embd; s2[0] = B; s2[1] = m->c.n_embd;
        h = ft_reshape(ctx, ft_slice(ctx, ft_reshape(ctx, h, 3, s3), 1, T - 1, 1), 2, s2);
    }
    if (h) y = ft__model_head(ctx, m, h);
    ft_ctx_set_grad(ctx, old);
    return y;
}


/* ---- sampling and generation -------------------------------------------------------------------
   ft_sample: temperature 0 is greedy (argmax, lowest id on ties); otherwise softmax(logits / T)
   restricted to the top_k most likely tokens (0: all), then to the smallest set whose
   probability reaches top_p (1: all), renormalised, and one draw from the RNG. */
typedef struct ft__cand { float p; int32_t id; } ft__cand;
static int ft__cand_desc(const void *a, const void *b) {
    const ft__cand *x = FT__CAST(const ft__cand *, a), *y = FT__CAST(const ft__cand *, b);
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return x->id < y->id ? -1 : x->id > y->id;
}

FT_API int32_t ft_sample(ft_ctx *ctx, const float *logits, int64_t V, const ft_sample_opts *o, ft_rng *rng) {
    ft__cand *c; int64_t i, n; float mx = -INFINITY, sum = 0, u, acc = 0;
    int32_t best = 0;
    for (i = 0; i < V; i++) if (logits[i] > mx) { mx = logits[i]; best = (int32_t)i; }
    if (!o || o->temperature <= 0.0f) return best;
    c = FT__CAST(ft__cand *, ft__arena_alloc(ctx, (size_t)V * sizeof(ft__cand)));
    if (!c) return best;
    for (i = 0; i < V; i++) { c[i].p = expf((logits[i] - mx) / o->temperature); c[i].id = (int32_t)i; }
    n = V;
    if ((o->top_k > 0 && o->top_k < V) || (o->top_p > 0.0f && o->top_p < 1.0f)) {
        qsort(c, (size_t)V, sizeof *c, ft__cand_desc);
        if (o->top_k > 0 && o->top_k < V) n = o->top_k;
        if (o->top_p > 0.0f && o->top_p < 1.0f) {
            float total = 0, run = 0; int64_t k;
            for (i = 0; i < n; i++) total += c[i].p;
            for (k = 0; k < n; k++) { run += c[k].p; if (run >= o->top_p * total) { n = k + 1; break; } }
        }
    }
    for (i = 0; i < n; i++) sum += c[i].p;
    u = ft_rng_uniform(rng) * sum;
    for (i = 0; i < n; i++) { acc += c[i].p; if (u < acc) return c[i].id; }
    return c[n - 1].id;
}

/* Generate for n prompts at once (rows 0..n-1 of kv, cleared first): each prompt is prefilled
   on its own, then all sequences advance one token per batched step until each has produced
   max_new tokens or one of the stop ids (the stop token is kept in the output). out: n rows of
   max_new ids; out_len: tokens per row; out_logp (optional, n x max_new): log p of each sampled
   token under the model at temperature 1. Resets ctx (tape and arena) between steps. */
static float ft__logp_of(const float *logits, int64_t V, int32_t tok) {
    float mx = ft__vec_max(V, logits);
    return logits[tok] - mx - logf(ft__vec_expsum(V, logits, mx));
}

FT_API ft_result ft_generate(ft_ctx *ctx, ft_model *m, ft_kv_cache *kv, int64_t n,
                             const int32_t *const *prompts, const int64_t *prompt_len,
                             const ft_gen_opts *o, ft_rng *rng, int32_t *out, int64_t *out_len, float *out_logp) {
    int64_t i, s, V = m->c.n_vocab, active;
    int32_t *last; unsigned char *done;
    ft_tensor *y;
    if (n < 1 || n > kv->n_seq) return ft_set_error(FT_ERR_INVALID, "generate: %lld sequences for a cache of %lld", (long long)n, (long long)kv->n_seq);
    if (o->max_new < 1) return ft_set_error(FT_ERR_INVALID, "generate: max_new must be at least 1");
    for (s = 0; s < n; s++)
        if (prompt_len[s] < 1 || prompt_len[s] + o->max_new > kv->n_ctx)
            return ft_set_error(FT_ERR_INVALID, "generate: prompt %lld has %lld tokens; with %d new ones it does not fit the cache (%lld)",
                                (long long)s, (long long)prompt_len[s], o->max_new, (long long)kv->n_ctx);
    last = FT__CAST(int32_t *, FT_MALLOC((size_t)n * sizeof(int32_t)));
    done = FT__CAST(unsigned char *, FT_MALLOC((size_t)n));
    if (!last || !done) { FT_FREE(last); FT_FREE(done); return ft_set_error(FT_ERR_NOMEM, "generate: out of memory"); }
#define FT__TAKE(s, logits) do {                                                                  \
        last[s] = ft_sample(ctx, logits, V, &o->sample, rng);                                      \
        if (out_logp) out_logp[(s) * o->max_new + out_len[s]] = ft__logp_of(logits, V, last[s]);   \
        out[(s) * o->max_new + out_len[s]++] = last[s];                                            \
        done[s] = out_len[s] >= o->max_new;                                                        \
        for (i = 0; i < o->n_stop; i++) if (last[s] == o->stop[i]) done[s] = 1;                    \
    } while (0)
    for (s = 0; s < n; s++) {                   /* prefill each prompt on its own */
        ft_kv_cache_clear(kv, s); out_len[s] = 0;
        ft_ctx_reset(ctx);
        y = ft_model_decode(ctx, m, kv, s, prompts[s], 1, prompt_len[s], 1);
        if (!y) { FT_FREE(last); FT_FREE(done); return ft_set_error(ctx->status, "generate: %s", ft_last_error()); }
        FT__TAKE(s, FT__F(y));
    }
    for (;;) {                                  /* then one batched step for all sequences */
        for (active = 0, s = 0; s < n; s++) active += !done[s];
        if (!active) break;
        ft_ctx_reset(ctx);
        y = ft_model_decode(ctx, m, kv, 0, last, n, 1, 1);      /* finished rows idle along */
        if (!y) { FT_FREE(last); FT_FREE(done); return ft_set_error(ctx->status, "generate: %s", ft_last_error()); }
        for (s = 0; s < n; s++) if (!done[s]) FT__TAKE(s, FT__F(y) + s * V);
    }
#undef FT__TAKE
    FT_FREE(last); FT_FREE(done);
    return FT_OK;
}


/* ============================================================================================
   [peft] parameter-efficient methods behind one interface, as hooks the one forward consults:
   LoRA / rsLoRA / DoRA, LoHa, bottleneck adapters, prefix and prompt tuning, IA3, full fine-tuning.
   Switching the adapter off (ft_peft_set_enabled) gives the base model: the reference policy of
   DPO, KTO, PPO and GRPO without a second copy of the weights.
   ============================================================================================ */

struct ft__peft_impl;
struct ft_peft {
    ft_model     *m;
    const struct ft__peft_impl *impl;   /* the method: its row of ft__peft_impls (below)          */
    ft_peft_method kind;
    ft_peft_opts  po;               /* the options it was attached with, defaults filled in       */
    ft_lora_opts  o;                /* LoRA, LoHa: po.lora                                         */
    ft_params    *P;
    int           enabled;
    ft_tensor    *score;            /* reward / value head (1, n_embd), or NULL (any method)      */
    /* LoRA / DoRA */
    float         scale;            /* alpha / r, or alpha / sqrt(r) (rsLoRA); LoHa: alpha / r     */
    ft_tensor   **A, **B, **mag;    /* per site (layer * FT_SITE_COUNT + which), NULL if none     */
    ft_tensor    *emb_A, *emb_B;    /* LoRA on the embedding: (V, r) rows gathered, (C, r)         */
    ft_tensor    *head_A, *head_B;  /* LoRA on the head: (r, C), (V, r)                            */
    /* merged into the weights (LoRA, DoRA, LoHa: ft_peft_merge) */
    ft_tensor    *merged;           /* merged copies of the weights (f32, owned), per site         */
    float        *merged_data;
    ft_tensor   **orig;             /* the weight headers before merging                            */
    /* the other methods */
    ft_tensor   **ad;               /* adapters: (layer * 2 + place) * 4 + {down W, b, up W, b}    */
    ft_tensor    *pre[5];           /* prefix: table or embedding, then W1, b1, W2, b2             */
    ft_tensor    *prompt;           /* prompt tuning: (P, n_embd)                                   */
    ft_tensor   **ia3;              /* IA3: per site, (out) or (in) for down_proj                  */
    ft_tensor   **full;             /* full: per model weight, its parameter or NULL (frozen)      */
    ft_tensor    *full_orig;        /* full: the model's original weight headers                   */
    ft_tensor   **hada;             /* LoHa: per site, w1_a (out, r), w1_b (r, in), w2_a, w2_b     */
    const ft_peft_method_def *custom;   /* your own method's hooks                                  */
    ft_tensor   **expA, **expB;     /* LoRA on experts: per ((layer * n_expert + e) * 3 + gate /
                                       up / down), NULL where none                                */
    ft_tensor   **router;           /* trained routers (n_expert, n_embd) per layer, or NULL      */
};

/* ---- the PEFT interface: what a method is to the rest of the library ---------------------------------
   A method adds its parameters to p->P (add), gives them their first values (init), and the one
   forward consults its hooks (NULL: not used): linear (a linear layer; l < 0 is the output head),
   after (a sublayer's output before the residual add), embed (token embeddings), prefix (keys and
   values every query sees), prompt (soft tokens before the input). A method that changes weights
   (delta, merge_row) can be merged into them (ft_peft_merge) and baked; enable and detach are for
   methods that point the model's weights elsewhere (full fine-tuning). PEFT's file format, where
   PEFT has the method: its peft_type and its writer and reader (after the method's code).
   finetune.h's own GGUF ([export]) holds every method by parameter names and options. */
typedef struct ft__peft_impl {
    ft_peft_method method;
    ft_result (*add)(ft_peft *p);
    ft_result (*init)(ft_peft *p, ft_rng *rng);
    ft_tensor *(*linear)(ft_ctx *ctx, ft_peft *p, ft_tensor *x, ft_tensor *W, ft_tensor *bias, int64_t l, int which);
    ft_tensor *(*after)(ft_ctx *ctx, ft_peft *p, int64_t l, int place, ft_tensor *y);
    ft_tensor *(*embed)(ft_ctx *ctx, ft_peft *p, ft_tensor *e, const int32_t *ids, int64_t n);
    ft_tensor *(*prefix)(ft_ctx *ctx, ft_peft *p);            /* (P, n_layer * 2 * kv_dim)            */
    ft_tensor *(*prompt)(ft_ctx *ctx, ft_peft *p);            /* (P, n_embd)                          */
    int       (*delta)(const ft_peft *p, int64_t s);          /* site s changes its weight            */
    void      (*merge_row)(const ft_peft *p, int64_t s, int64_t o, float *row, int64_t in);
    void      (*enable)(ft_peft *p, int on);
    ft_result (*bake)(ft_peft *p);                            /* NULL: merge (when it has a delta)    */
    void      (*detach)(ft_peft *p);
    const char *peft_type;                                    /* adapter_config.json's; NULL: none    */
    ft_result (*save_peft)(ft_peft *p, const char *dir, const char *base_model_name);
    ft_result (*load_peft)(ft_peft **out, ft_model *m, const char *dir);
    /* expert e's gate / up / down (k = 0, 1, 2) of MoE layer l; NULL: the experts stay as they are */
    ft_tensor *(*expert)(ft_ctx *ctx, ft_peft *p, ft_tensor *x, ft_tensor *W, int64_t l, int64_t e, int k);
} ft__peft_impl;
static const ft__peft_impl *ft__peft_impl_of(ft_peft_method k);

static ft_tensor **ft__site_weight(ft_model *m, int64_t l, int which) {
    ft_layer *L = &m->layers[l];
    switch (which) {
    case FT_SITE_Q: return &L->wq;      case FT_SITE_K: return &L->wk;
    case FT_SITE_V: return &L->wv;      case FT_SITE_O: return &L->wo;
    case FT_SITE_GATE: return &L->w_gate; case FT_SITE_UP: return &L->w_up;
    default: return &L->w_down;
    }
}
FT_API ft_tensor *ft_peft_reward_head(ft_peft *p) { return p ? p->score : NULL; }
FT_API const char *ft_site_name(int which) {
    static const char *n[FT_SITE_COUNT] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    return which >= 0 && which < FT_SITE_COUNT ? n[which] : "?";
}
static int ft__layer_on(const uint64_t *mask, int64_t l) { return !mask || (mask[l / 64] >> (l % 64) & 1); }
static void ft__init_kaiming(ft_tensor *t, int64_t fan_in, ft_rng *rng) {   /* torch's Linear / LoRA A */
    float b = 1.0f / sqrtf((float)fan_in); int64_t i, n = ft_numel(t);
    for (i = 0; i < n; i++) FT__F(t)[i] = b * (2.0f * ft_rng_uniform(rng) - 1.0f);
}
static void ft__init_normal(ft_tensor *t, float std, ft_rng *rng) {
    int64_t i, n = ft_numel(t);
    for (i = 0; i < n; i++) FT__F(t)[i] = std * ft_rng_normal(rng);
}
static void ft__init_const(ft_tensor *t, float v) { int64_t i, n = ft_numel(t); for (i = 0; i < n; i++) FT__F(t)[i] = v; }
/* a parameter of the method's, or FT_ERR_NOMEM */
static ft_result ft__peft_param(ft_peft *p, ft_tensor **dst, const char *name, int ndim, int64_t s0, int64_t s1) {
    int64_t sh[2];
    sh[0] = s0;
    sh[1] = s1;
    *dst = ft_params_add(p->P, name, ndim, sh);
    return *dst ? FT_OK : ft_set_error(FT_ERR_NOMEM, "peft: out of memory (%s)", name);
}
/* a zeroed array of n tensor pointers owned by the method */
static ft_result ft__peft_slots(ft_tensor ***dst, int64_t n) {
    *dst = FT__CAST(ft_tensor **, FT_MALLOC((size_t)FT__MAX(n, 1) * sizeof(ft_tensor *)));
    if (!*dst) return ft_set_error(FT_ERR_NOMEM, "peft: out of memory");
    memset(*dst, 0, (size_t)FT__MAX(n, 1) * sizeof(ft_tensor *));
    return FT_OK;
}

/* ============================================================================================
   Adapter files: what every method's files share. llama.cpp's LoRA GGUF (general.type
   "adapter", adapter.type "lora", adapter.lora.alpha; "<weight>.lora_a" ne [in, r],
   "<weight>.lora_b" ne [r, out]) and PEFT's adapter_model.safetensors + adapter_config.json
   (Hugging Face names; the Q/K rows that the GGUF converter permuted are put back: GGUF row 2j =
   HF row j, row 2j+1 = HF row j + D/2). Each method's own files follow its code; finetune.h's
   own GGUF (every method) and the format policy are in [export].
   ============================================================================================ */
static int ft__layer_has_site(const ft_peft *p, int64_t l);
/* ---- the Q/K row permutation between GGUF and Hugging Face ------------------------------------------ */
/* rows (n_head * D, cols): to_hf = 1: HF[h*D + j] = G[h*D + 2j], HF[h*D + D/2 + j] = G[h*D + 2j + 1] */
static void ft__permute_rows(float *dst, const float *src, int64_t n_head, int64_t D, int64_t cols, int to_hf) {
    int64_t h, j;
    for (h = 0; h < n_head; h++)
        for (j = 0; j < D / 2; j++) {
            const float *g0 = src + (h * D + (to_hf ? 2 * j : j)) * cols, *g1 = src + (h * D + (to_hf ? 2 * j + 1 : j + D / 2)) * cols;
            memcpy(dst + (h * D + (to_hf ? j : 2 * j)) * cols, g0, (size_t)cols * sizeof(float));
            memcpy(dst + (h * D + (to_hf ? j + D / 2 : 2 * j + 1)) * cols, g1, (size_t)cols * sizeof(float));
        }
}
static const char *ft__gguf_site_name(int which) {
    static const char *n[FT_SITE_COUNT] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
    return n[which];
}
static const char *ft__hf_site_module(int which) { return which <= FT_SITE_O ? "self_attn" : "mlp"; }
/* does this site's output dimension carry the converter's Q/K permutation? (heads, or 0) */
static int64_t ft__site_permuted_heads(const ft_model *m, int which) {
    if (m->c.rope_type != FT_ROPE_NORM) return 0;
    return which == FT_SITE_Q ? m->c.n_head : which == FT_SITE_K ? m->c.n_head_kv : 0;
}

/* ---- which layers and sites an adapter file covers ---------------------------------------------------- */
typedef struct ft__adapter_scan {
    unsigned targets;               /* FT_TARGET_* bits seen                                     */
    int      r;                     /* the rank (every site the same)                             */
    uint64_t *mask;                 /* bit per layer that has a site                              */
    int64_t  n_layer, n_seen;
} ft__adapter_scan;
static ft_result ft__adapter_scan_init(ft__adapter_scan *sc, const ft_model *m) {
    memset(sc, 0, sizeof *sc);
    sc->n_layer = m->c.n_layer;
    sc->mask = FT__CAST(uint64_t *, FT_MALLOC((size_t)(m->c.n_layer + 63) / 64 * sizeof(uint64_t)));
    if (!sc->mask) return ft_set_error(FT_ERR_NOMEM, "adapter: out of memory");
    memset(sc->mask, 0, (size_t)(m->c.n_layer + 63) / 64 * sizeof(uint64_t));
    return FT_OK;
}
/* one A matrix of layer l, site which, rank r, found in tensor `name` of `path` */
static ft_result ft__adapter_scan_add(ft__adapter_scan *sc, const char *path, const char *name, int64_t l, int which, int64_t r) {
    if (l < 0 || l >= sc->n_layer)
        return ft_set_error(FT_ERR_SHAPE, "%s: tensor %s is for layer %lld, but the model has %lld layers (wrong base model?)", path, name, (long long)l, (long long)sc->n_layer);
    if (r < 1 || r > 65536 || (sc->r && r != sc->r))
        return ft_set_error(FT_ERR_UNSUPPORTED, "%s: tensor %s has rank %lld where others have %d (one rank for every site is supported)", path, name, (long long)r, sc->r);
    sc->r = (int)r; sc->targets |= 1u << which; sc->mask[l / 64] |= (uint64_t)1 << (l % 64); sc->n_seen++;
    return FT_OK;
}
/* attach the method (LoRA, LoHa, IA3) with the scanned rank, targets and layers (the layer mask is
   NULL when all are there) */
static ft_result ft__adapter_scan_attach(ft__adapter_scan *sc, ft_peft **out, ft_model *m, ft_peft_opts *o, const char *path) {
    int64_t l; int all = 1; ft_result r;
    if (!sc->n_seen) { FT_FREE(sc->mask); return ft_set_error(FT_ERR_FORMAT, "%s: no %s tensors found", path, ft_peft_method_name(o->method)); }
    for (l = 0; l < sc->n_layer; l++) all &= (int)(sc->mask[l / 64] >> (l % 64) & 1);
    o->lora.r = sc->r; o->lora.targets = sc->targets; o->lora.layer_mask = all ? NULL : sc->mask;
    o->ia3_targets = sc->targets;                  /* (IA3's sites; its layers come from lora.layer_mask) */
    r = ft_peft_attach(out, m, o);
    FT_FREE(sc->mask);
    return r;
}
static ft_result ft__adapter_scan_attach_lora(ft__adapter_scan *sc, ft_peft **out, ft_model *m, const ft_lora_opts *lo, const char *path) {
    ft_peft_opts o = ft_peft_opts_default(FT_PEFT_LORA);
    o.lora = *lo;
    return ft__adapter_scan_attach(sc, out, m, &o, path);
}

/* ---- PEFT: adapter_model.safetensors + adapter_config.json -------------------------------------------
   Every method writes through one builder (ft__peft_out: the tensors, rows put back into Hugging
   Face's order, the config's text) and reads a tensor through one reader (ft__peft_in_tensor); a
   method brings its tensor names and its config keys. A site's tensor is named
   base_model.model.model.layers.{l}.{self_attn|mlp}.{q_proj|...}.{part}; the rows of q_proj and
   k_proj outputs carry the converter's permutation (ft__permute_rows). */
typedef struct ft__peft_out {
    ft__st_entry *e;                /* adapter_model.safetensors' tensors, in order                */
    char    *names;                 /* 128 bytes per entry                                          */
    float   *scratch;               /* the rows put back into Hugging Face's order                  */
    int64_t  n, cap_e, used, cap_f;
    char    *cfg;                   /* adapter_config.json                                          */
    size_t   len, cap;
} ft__peft_out;

static void ft__peft_out_free(ft__peft_out *o) {
    FT_FREE(o->e);
    FT_FREE(o->names);
    FT_FREE(o->scratch);
    FT_FREE(o->cfg);
    memset(o, 0, sizeof *o);
}
/* more of the config (len counts what did not fit: ft__peft_out_write refuses it) */
static void ft__peft_out_cfg(ft__peft_out *o, const char *fmt, ...) {
    va_list ap;
    int k;
    va_start(ap, fmt);
    k = vsnprintf(o->cfg + FT__MIN(o->len, o->cap), o->len < o->cap ? o->cap - o->len : 0, fmt, ap);
    va_end(ap);
    if (k > 0) o->len += (size_t)k;
}
/* s as the inside of a JSON string (quotes, backslashes, control characters escaped), cut to fit cap */
static void ft__json_escape(char *dst, size_t cap, const char *s) {
    size_t n = 0;
    for (; s && *s && n + 7 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') { dst[n++] = '\\'; dst[n++] = (char)ch; }
        else if (ch < 0x20) n += (size_t)snprintf(dst + n, cap - n, "\\u%04x", ch);
        else dst[n++] = (char)ch;
    }
    dst[n] = 0;
}
/* room for p's trainable tensors (the files hold at most those, plus `extra` floats computed
   from them) and the keys every PEFT config opens with */
static ft_result ft__peft_out_init(ft__peft_out *o, const ft_peft *p, const char *peft_type, const char *base, int64_t extra) {
    char esc[512];
    memset(o, 0, sizeof *o);
    o->cap_e = ft_params_count(p->P) + 1;
    o->cap_f = ft_params_numel(p->P) + extra + 1;
    o->cap = 8192 + (size_t)p->m->c.n_layer * 8;
    o->e = FT__CAST(ft__st_entry *, FT_MALLOC((size_t)o->cap_e * sizeof *o->e));
    o->names = FT__CAST(char *, FT_MALLOC((size_t)o->cap_e * 128));
    o->scratch = FT__CAST(float *, FT_MALLOC((size_t)o->cap_f * sizeof(float)));
    o->cfg = FT__CAST(char *, FT_MALLOC(o->cap));
    if (!o->e || !o->names || !o->scratch || !o->cfg) { ft__peft_out_free(o); return ft_set_error(FT_ERR_NOMEM, "peft save: out of memory"); }
    ft__json_escape(esc, sizeof esc, base);
    ft__peft_out_cfg(o, "{\n  \"peft_type\": \"%s\",\n  \"task_type\": \"CAUSAL_LM\",\n  \"base_model_name_or_path\": \"%s\",\n"
                     "  \"inference_mode\": true,\n  \"modules_to_save\": null", peft_type, esc);
    return FT_OK;
}
/* n floats of scratch (NULL when the upper bound of ft__peft_out_init was wrong) */
static float *ft__peft_out_scratch(ft__peft_out *o, int64_t n) {
    float *at = o->scratch + o->used;
    if (o->used + n > o->cap_f) return NULL;
    o->used += n;
    return at;
}
/* tensor `name`, [d0] (d1 = 0) or [d0, d1], from data (kept until the write) */
static void ft__peft_out_tensor(ft__peft_out *o, const char *name, int64_t d0, int64_t d1, const float *data) {
    ft__st_entry *e = o->e + o->n;
    if (o->n >= o->cap_e || !data) { o->n = o->cap_e + 1; return; }     /* refused at the write */
    snprintf(o->names + o->n * 128, 128, "%s", name);
    e->name = o->names + o->n * 128;
    e->ndim = d1 ? 2 : 1;
    e->shape[0] = d0;
    e->shape[1] = d1;
    e->data = data;
    o->n++;
}
static void ft__peft_site_name(char *dst, size_t cap, int64_t s, const char *part) {
    int which = (int)(s % FT_SITE_COUNT);
    snprintf(dst, cap, "base_model.model.model.layers.%d.%s.%s.%s", (int)(s / FT_SITE_COUNT), ft__hf_site_module(which), ft_site_name(which), part);
}
/* site s's tensor `part`, [d0] or [d0, d1]; out_rows: its d0 rows are the site's outputs (into
   Hugging Face's order for q_proj and k_proj) */
static void ft__peft_out_site(ft__peft_out *o, const ft_model *m, int64_t s, const char *part, const ft_tensor *t, int64_t d0, int64_t d1, int out_rows) {
    int64_t heads = out_rows ? ft__site_permuted_heads(m, (int)(s % FT_SITE_COUNT)) : 0;
    const float *data = FT__F(t);
    char name[128];
    if (heads) {
        float *hf = ft__peft_out_scratch(o, ft_numel(t));
        if (hf) ft__permute_rows(hf, data, heads, m->c.head_dim, d1 ? d1 : 1, 1);
        data = hf;
    }
    ft__peft_site_name(name, sizeof name, s, part);
    ft__peft_out_tensor(o, name, d0, d1, data);
}
/* ,\n  "target_modules": [...] (and layers_to_transform when not every layer has a site) */
static void ft__peft_out_sites(ft__peft_out *o, const ft_peft *p) {
    int64_t l;
    int t, all = 1;
    const char *sep = "";
    ft__peft_out_cfg(o, ",\n  \"target_modules\": [");
    for (t = 0; t < FT_SITE_COUNT; t++)
        if (p->o.targets & (1u << t)) { ft__peft_out_cfg(o, "%s\"%s\"", sep, ft_site_name(t)); sep = ", "; }
    ft__peft_out_cfg(o, "]");
    for (l = 0; l < p->m->c.n_layer; l++) all &= ft__layer_has_site(p, l);
    if (all) return;
    ft__peft_out_cfg(o, ",\n  \"layers_to_transform\": [");
    for (sep = "", l = 0; l < p->m->c.n_layer; l++)
        if (ft__layer_has_site(p, l)) { ft__peft_out_cfg(o, "%s%d", sep, (int)l); sep = ", "; }
    ft__peft_out_cfg(o, "]");
}
/* close the config; adapter_model.safetensors, then adapter_config.json (each atomic) */
static ft_result ft__peft_out_write(ft__peft_out *o, const char *dir) {
    char path[1024];
    ft__afile a;
    ft_result r;
    ft__peft_out_cfg(o, "\n}\n");
    if (o->len >= o->cap || o->n > o->cap_e) {
        r = ft_set_error(FT_ERR_STATE, "%s: the adapter outgrew its buffers (%zu bytes of config, %lld tensors)", dir, o->len, (long long)o->n);
        ft__peft_out_free(o);
        return r;
    }
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    r = ft__safetensors_write(path, o->e, (int)o->n);
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    if (r == FT_OK && (r = ft__afile_open(&a, path)) == FT_OK) {
        ft__afile_write(&a, o->cfg, o->len);
        r = ft__afile_commit(&a);
    }
    ft__peft_out_free(o);
    return r;
}

/* a safetensors entry as f32 (F32, F16, BF16); 0 for other dtypes */
static int ft__st_to_f32(const void *d, const char *dtype, int64_t n, float *dst) {
    int64_t i; const unsigned char *b = FT__CAST(const unsigned char *, d);
    if (strcmp(dtype, "F32") == 0) { memcpy(dst, d, (size_t)n * sizeof(float)); return 1; }
    if (strcmp(dtype, "F16") == 0 || strcmp(dtype, "BF16") == 0) {
        int bf = dtype[0] == 'B';
        for (i = 0; i < n; i++) { uint16_t h; memcpy(&h, b + 2 * i, 2); dst[i] = bf ? ft_bf16_to_fp32(h) : ft_fp16_to_fp32(h); }
        return 1;
    }
    return 0;
}
/* tensor nm of st into t: as many values as t has, F32 / F16 / BF16; with heads, its rows (cols
   wide) out of Hugging Face's order */
static ft_result ft__peft_in_tensor(ft_tensor *t, const ft_safetensors *st, const char *path, const char *nm, const ft_model *m, int64_t heads, int64_t cols) {
    const char *dt;
    int64_t sh[8], k, n = 1;
    int nd = 0, ok;
    const void *d = ft_safetensors_get(st, nm, &dt, sh, &nd);
    float *tmp;
    if (!d) return ft_set_error(FT_ERR_FORMAT, "%s: tensor %s is missing", path, nm);
    for (k = 0; k < nd; k++) n *= sh[k];
    if (n != ft_numel(t)) return ft_set_error(FT_ERR_SHAPE, "%s: tensor %s has %lld values, the model needs %lld (wrong base model?)", path, nm, (long long)n, (long long)ft_numel(t));
    if (!(tmp = FT__CAST(float *, FT_MALLOC((size_t)n * sizeof(float))))) return ft_set_error(FT_ERR_NOMEM, "%s: out of memory", path);
    ok = ft__st_to_f32(d, dt, n, tmp);
    if (ok && heads) ft__permute_rows(FT__F(t), tmp, heads, m->c.head_dim, cols, 0);
    else if (ok) memcpy(t->data, tmp, (size_t)n * sizeof(float));
    FT_FREE(tmp);
    if (!ok) return ft_set_error(FT_ERR_UNSUPPORTED, "%s: tensor %s has dtype %s (F32, F16, BF16 are read)", path, nm, dt);
    t->version++;
    return FT_OK;
}
/* the layer / site of "...layers.{l}.{module}.{site}.{part}", and which of `parts` it is; -1: none */
static int ft__peft_site_key(const char *nm, const char *const *parts, int nparts, long long *l, int *part) {
    const char *at = nm ? strstr(nm, "layers.") : NULL; int pre = 0, w, k;
    if (!at || sscanf(at, "layers.%lld.%n", l, &pre) != 1 || pre <= 0) return -1;
    for (w = 0; w < FT_SITE_COUNT; w++)
        for (k = 0; k < nparts; k++) {
            char want[96];
            snprintf(want, sizeof want, "%s.%s.%s", ft__hf_site_module(w), ft_site_name(w), parts[k]);
            if (strcmp(at + pre, want) == 0) { *part = k; return w; }
        }
    return -1;
}
static ft_result ft__peft_read_config(const char *dir, ft_json_doc **doc) {
    char path[1024];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    return ft__json_file(path, doc, 1);
}
/* a number of adapter_config.json in [lo, hi] (whole if `whole`): FT_OK with *out set, or left as
   it is when the key is absent or null; an error naming the file, the key and the range otherwise */
static ft_result ft__peft_cfg_number(const ft_json *root, const char *key, double lo, double hi, int whole, double *out, const char *dir) {
    const ft_json *v = ft_json_get(root, key);
    if (!v || v->kind == FT_JSON_NULL) return FT_OK;
    if (v->kind != FT_JSON_NUMBER || !(v->num >= lo && v->num <= hi) || (whole && v->num != floor(v->num)))
        return ft_set_error(FT_ERR_FORMAT, "%s/adapter_config.json: \"%s\" must be a%s number in [%g, %g]", dir, key, whole ? " whole" : "", lo, hi);
    *out = v->num;
    return FT_OK;
}
/* the sites and layers of a file's tensors `parts[0]` (the first factor: its rank from dimension
   rank_dim, or none when rank_dim < 0), then the method attached with them; every tensor must be
   one of `parts` */
static ft_result ft__peft_scan_attach(ft_peft **out, ft_model *m, ft_peft_opts *o, ft_safetensors *st, const char *path,
                                      const char *const *parts, int nparts, int rank_dim) {
    ft__adapter_scan sc;
    ft_result r;
    int64_t i;
    if ((r = ft__adapter_scan_init(&sc, m)) != FT_OK) return r;
    for (i = 0; i < ft_safetensors_count(st) && r == FT_OK; i++) {
        const char *nm = ft_safetensors_name(st, i), *dt;
        long long l = -1;
        int k, w, nd = 0;
        int64_t shape[8];
        if (!nm || strcmp(nm, "__metadata__") == 0) continue;
        if ((w = ft__peft_site_key(nm, parts, nparts, &l, &k)) < 0) {
            r = ft_set_error(FT_ERR_UNSUPPORTED, "%s: tensor %s: not a %s tensor of a layer's q, k, v, o, gate, up or down projection", path, nm, ft__peft_impl_of(o->method)->peft_type);
            break;
        }
        ft_safetensors_get(st, nm, &dt, shape, &nd);
        if (k == 0) r = ft__adapter_scan_add(&sc, path, nm, (int64_t)l, w, rank_dim < 0 ? 1 : nd == 2 ? shape[rank_dim] : 0);
    }
    if (r != FT_OK) { FT_FREE(sc.mask); return r; }
    return ft__adapter_scan_attach(&sc, out, m, o, path);
}

/* ============================================================================================
   LoRA (PEFT's layout and init):  y = x W^T + s * (drop(x) A^T) B^T,  A (r, in), B (out, r),
     A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform with a = sqrt(5)), B = 0,
     s = alpha / r, or alpha / sqrt(r) with rsLoRA. On the embedding (PEFT's Embedding LoRA):
     e + s A[ids] B^T with A = 0, B ~ N(0, 1); on the head as on any linear layer.
   DoRA: y = (m / ||W + s B A||_row) * (x W^T + s * lora(x)), the norm detached (no gradient),
     the magnitude m initialised to ||W||_row.
   ============================================================================================ */
FT_API ft_lora_opts ft_lora_opts_default(void) {
    ft_lora_opts o;
    memset(&o, 0, sizeof o);
    o.r = 8;
    o.alpha = 8.0f;
    o.targets = FT_TARGET_ALL_LINEAR;
    return o;
}

static ft_result ft__lora_add_site(ft_peft *p, int64_t l, int w) {
    ft_tensor *W = *ft__site_weight(p->m, l, w);
    int64_t s = l * FT_SITE_COUNT + w;
    char name[128];
    ft_result r;
    snprintf(name, sizeof name, "layers.%d.%s.lora_A", (int)l, ft_site_name(w));
    if ((r = ft__peft_param(p, &p->A[s], name, 2, p->o.r, W->shape[1])) != FT_OK) return r;
    snprintf(name, sizeof name, "layers.%d.%s.lora_B", (int)l, ft_site_name(w));
    if ((r = ft__peft_param(p, &p->B[s], name, 2, W->shape[0], p->o.r)) != FT_OK) return r;
    if (!p->o.dora) return FT_OK;
    snprintf(name, sizeof name, "layers.%d.%s.lora_magnitude_vector", (int)l, ft_site_name(w));
    return ft__peft_param(p, &p->mag[s], name, 1, W->shape[0], 1);
}
/* LoRA on the experts of every MoE layer (gate, up, down as the targets say): each expert its own
   A (r, in) and B (out, r), which see only the tokens routed to that expert */
static ft_result ft__lora_add_experts(ft_peft *p) {
    static const int site[3] = {FT_SITE_GATE, FT_SITE_UP, FT_SITE_DOWN};
    ft_model *m = p->m; int64_t l, e, E = m->c.n_expert, n = m->c.n_layer * E * 3; int k; ft_result r;
    if (!(p->o.targets & ((1u << FT_SITE_GATE) | (1u << FT_SITE_UP) | (1u << FT_SITE_DOWN)))) return FT_OK;
    if ((r = ft__peft_slots(&p->expA, 2 * n)) != FT_OK) return r;
    p->expB = p->expA + n;
    for (l = 0; l < m->c.n_layer; l++) {
        ft_layer *L = &m->layers[l];
        if (!L->router || !ft__layer_on(p->o.layer_mask, l)) continue;
        if (p->o.dora) return ft_set_error(FT_ERR_UNSUPPORTED, "dora: not on experts (target the attention only, or plain LoRA)");
        for (e = 0; e < E; e++) for (k = 0; k < 3; k++) {
            ft_tensor *W = (k == 0 ? L->gate_exps : k == 1 ? L->up_exps : L->down_exps)[e];
            int64_t i = (l * E + e) * 3 + k; char name[128];
            if (!(p->o.targets & (1u << site[k]))) continue;
            snprintf(name, sizeof name, "layers.%d.experts.%d.%s.lora_A", (int)l, (int)e, ft_site_name(site[k]));
            if ((r = ft__peft_param(p, &p->expA[i], name, 2, p->o.r, W->shape[1])) != FT_OK) return r;
            snprintf(name, sizeof name, "layers.%d.experts.%d.%s.lora_B", (int)l, (int)e, ft_site_name(site[k]));
            if ((r = ft__peft_param(p, &p->expB[i], name, 2, W->shape[0], p->o.r)) != FT_OK) return r;
        }
    }
    return FT_OK;
}
/* trained routers: a full f32 copy of each MoE layer's router, started from the model's */
static ft_result ft__lora_add_routers(ft_peft *p) {
    ft_model *m = p->m; int64_t l, n = 0; ft_result r; char name[64];
    if (!m->c.n_expert) return ft_set_error(FT_ERR_INVALID, "lora: --train-router, but %s has no experts", m->c.arch_name);
    if ((r = ft__peft_slots(&p->router, m->c.n_layer)) != FT_OK) return r;
    for (l = 0; l < m->c.n_layer; l++) {
        if (!m->layers[l].router || !ft__layer_on(p->o.layer_mask, l)) continue;
        snprintf(name, sizeof name, "layers.%d.router.weight", (int)l);
        if ((r = ft__peft_param(p, &p->router[l], name, 2, m->c.n_expert, m->c.n_embd)) != FT_OK) return r;
        n++;
    }
    return n ? FT_OK : ft_set_error(FT_ERR_INVALID, "lora: no MoE layer to train the router of");
}
static ft_result ft__lora_add(ft_peft *p) {
    ft_model *m = p->m; int64_t l, nsites = m->c.n_layer * FT_SITE_COUNT; int w; ft_result r;
    if (p->o.dropout < 0 || p->o.dropout >= 1) return ft_set_error(FT_ERR_INVALID, "lora: dropout %g outside [0, 1)", (double)p->o.dropout);
    p->scale = p->o.rslora ? p->o.alpha / sqrtf((float)p->o.r) : p->o.alpha / (float)p->o.r;
    if ((r = ft__peft_slots(&p->A, nsites * 3)) != FT_OK) return r;
    p->B = p->A + nsites;
    p->mag = p->B + nsites;
    for (l = 0; l < m->c.n_layer; l++) {
        if (!ft__layer_on(p->o.layer_mask, l)) continue;
        for (w = 0; w < FT_SITE_COUNT; w++)             /* (a mixture of experts has no dense FFN) */
            if ((p->o.targets & (1u << w)) && *ft__site_weight(m, l, w) && (r = ft__lora_add_site(p, l, w)) != FT_OK) return r;
    }
    if (m->c.n_expert && (r = ft__lora_add_experts(p)) != FT_OK) return r;
    if (p->o.train_router && (r = ft__lora_add_routers(p)) != FT_OK) return r;
    if (p->o.targets & FT_TARGET_EMBED) {            /* PEFT's lora_embedding_A (r, V) is stored as its transpose */
        if ((r = ft__peft_param(p, &p->emb_A, "embed_tokens.lora_embedding_A", 2, m->tok_embd->shape[0], p->o.r)) != FT_OK) return r;
        if ((r = ft__peft_param(p, &p->emb_B, "embed_tokens.lora_embedding_B", 2, m->c.n_embd, p->o.r)) != FT_OK) return r;
    }
    if (p->o.targets & FT_TARGET_HEAD) {
        if ((r = ft__peft_param(p, &p->head_A, "lm_head.lora_A", 2, p->o.r, m->c.n_embd)) != FT_OK) return r;
        if ((r = ft__peft_param(p, &p->head_B, "lm_head.lora_B", 2, m->output->shape[0], p->o.r)) != FT_OK) return r;
    }
    return ft_params_count(p->P) ? FT_OK : ft_set_error(FT_ERR_INVALID, "lora: no layer matches the targets");
}
/* DoRA's magnitude: the row norms of W */
static ft_result ft__dora_init(ft_peft *p, int64_t s) {
    ft_tensor *W = *ft__site_weight(p->m, s / FT_SITE_COUNT, (int)(s % FT_SITE_COUNT));
    int64_t o, in = W->shape[1];
    float *row = FT__CAST(float *, FT_MALLOC((size_t)in * sizeof(float)));
    if (!row) return ft_set_error(FT_ERR_NOMEM, "dora: out of memory");
    for (o = 0; o < W->shape[0]; o++) {
        ft__weight_row(W, o, 0, in, row);
        FT__F(p->mag[s])[o] = sqrtf(ft__vec_dot(in, row, row));
    }
    FT_FREE(row);
    return FT_OK;
}
static ft_result ft__lora_init(ft_peft *p, ft_rng *rng) {
    int64_t s, nsites = p->m->c.n_layer * FT_SITE_COUNT; ft_result r;
    for (s = 0; s < nsites; s++) {                    /* PEFT's init: A kaiming-uniform, B zero */
        if (!p->A[s]) continue;
        ft__init_kaiming(p->A[s], p->A[s]->shape[1], rng);
        if (p->mag[s] && (r = ft__dora_init(p, s)) != FT_OK) return r;
    }
    for (s = 0; p->expA && s < p->m->c.n_layer * p->m->c.n_expert * 3; s++)     /* experts: as a linear layer */
        if (p->expA[s]) ft__init_kaiming(p->expA[s], p->expA[s]->shape[1], rng);
    for (s = 0; p->router && s < p->m->c.n_layer; s++)                           /* routers: the model's */
        if (p->router[s]) {
            int64_t e;
            for (e = 0; e < p->m->c.n_expert; e++) ft__weight_row(p->m->layers[s].router, e, 0, p->m->c.n_embd, FT__F(p->router[s]) + e * p->m->c.n_embd);
        }
    if (p->emb_A) {                                   /* PEFT's embedding init: A = 0, B ~ N(0, 1) */
        ft__init_const(p->emb_A, 0.0f);
        ft__init_normal(p->emb_B, 1.0f, rng);
    }
    if (p->head_A) {                                  /* a linear layer's: A kaiming-uniform, B = 0 */
        ft__init_kaiming(p->head_A, p->head_A->shape[1], rng);
        ft__init_const(p->head_B, 0.0f);
    }
    return FT_OK;
}

/* ||W + s B A|| per output row, without gradient: (out) in the arena */
static ft_tensor *ft__dora_norm(ft_ctx *ctx, ft_tensor *W, ft_tensor *A, ft_tensor *B, float s) {
    int64_t out = W->shape[0], in = W->shape[1], r = A->shape[0], o, k;
    ft_tensor *n = ft_tensor_1d(ctx, out);
    float *row = FT__CAST(float *, ft__arena_alloc(ctx, (size_t)in * sizeof(float)));
    if (!n || !row) return ft__fail(ctx, FT_ERR_NOMEM, "dora: arena out of memory");
    for (o = 0; o < out; o++) {
        ft__weight_row(W, o, 0, in, row);
        for (k = 0; k < r; k++) ft__vec_axpy(in, s * FT__F(B)[o * r + k], FT__F(A) + k * in, row);
        FT__F(n)[o] = sqrtf(ft__vec_dot(in, row, row));
    }
    return n;
}
/* x W^T + b, the plain linear layer */
static ft_tensor *ft__plain_linear(ft_ctx *ctx, ft_tensor *x, ft_tensor *W, ft_tensor *bias) {
    ft_tensor *y = ft_matmul(ctx, x, W, 0, 1);
    return bias ? ft_add(ctx, y, bias) : y;
}
static ft_tensor *ft__lora_expert(ft_ctx *ctx, ft_peft *p, ft_tensor *x, ft_tensor *W, int64_t l, int64_t e, int k) {
    int64_t i = (l * p->m->c.n_expert + e) * 3 + k;
    ft_tensor *A = p->expA && !p->orig ? p->expA[i] : NULL, *xd;
    if (!A) return ft_matmul(ctx, x, W, 0, 1);
    xd = p->o.dropout > 0 && ctx->grad_enabled ? ft_dropout(ctx, x, p->o.dropout) : NULL;
    return ft_lora_linear(ctx, x, W, A, p->expB[i], p->scale, xd);
}
static ft_tensor *ft__lora_linear(ft_ctx *ctx, ft_peft *p, ft_tensor *x, ft_tensor *W, ft_tensor *bias, int64_t l, int which) {
    int64_t s = l * FT_SITE_COUNT + which;
    ft_tensor *y, *A = l < 0 ? p->head_A : p->orig ? NULL : p->A[s], *B = l < 0 ? p->head_B : A ? p->B[s] : NULL, *xd;
    if (!A) return ft__plain_linear(ctx, x, W, bias);
    xd = p->o.dropout > 0 && ctx->grad_enabled ? ft_dropout(ctx, x, p->o.dropout) : NULL;
    y = ft_lora_linear(ctx, x, W, A, B, p->scale, xd);                    /* x W^T + s (xd A^T) B^T */
    if (l >= 0 && p->mag[s]) {
        ft_tensor *norm = ft__dora_norm(ctx, W, A, B, p->scale), *inv;
        int64_t i;
        FT__IN(norm);
        inv = ft__like(ctx, norm); FT__IN(inv);
        for (i = 0; i < ft_numel(norm); i++) FT__F(inv)[i] = 1.0f / FT__F(norm)[i];
        y = ft_mul(ctx, y, ft_mul(ctx, p->mag[s], inv));
    }
    return bias ? ft_add(ctx, y, bias) : y;
}
/* token embeddings e plus s * A[ids] B^T (PEFT's Embedding LoRA) */
static ft_tensor *ft__lora_embed(ft_ctx *ctx, ft_peft *p, ft_tensor *e, const int32_t *ids, int64_t n) {
    if (!p->emb_A) return e;
    return ft_add(ctx, e, ft_matmul(ctx, ft_scale(ctx, ft_embedding(ctx, p->emb_A, ids, n), p->scale), p->emb_B, 0, 1));
}
static int ft__lora_delta(const ft_peft *p, int64_t s) { return p->A[s] != NULL; }
/* row o of the merged weight of site s, in place over the decoded base row (in floats):
   row += s * B[o, :] A  (DoRA: then row *= m[o] / ||row||, PEFT's merge) */
static void ft__lora_merge_row(const ft_peft *p, int64_t s, int64_t o, float *row, int64_t in) {
    int64_t k, r = p->A[s]->shape[0];
    for (k = 0; k < r; k++) ft__vec_axpy(in, p->scale * FT__F(p->B[s])[o * r + k], FT__F(p->A[s]) + k * in, row);
    if (p->mag[s]) ft__vec_scale(in, row, FT__F(p->mag[s])[o] / sqrtf(ft__vec_dot(in, row, row)), row);
}

/* ---- llama.cpp LoRA adapter GGUF -------------------------------------------------------------------- */
static ft_result ft__lora_save_gguf(ft_peft *p, const char *path) {
    ft_gguf_writer *w; ft_result r; int64_t s, nsites; char name[128];
    nsites = p->m->c.n_layer * FT_SITE_COUNT;
    if ((r = ft_gguf_writer_init(&w)) != FT_OK) return r;
    ft_gguf_set_str(w, "general.type", "adapter");
    ft_gguf_set_str(w, "general.architecture", p->m->c.arch_name);
    ft_gguf_set_str(w, "adapter.type", "lora");
    /* llama.cpp scales by alpha / r; with rsLoRA store the alpha that gives the same scale */
    ft_gguf_set_float(w, "adapter.lora.alpha", FT_GGUF_FLOAT32, (double)(p->scale * (float)p->o.r));
    ft_gguf_set_int(w, "adapter.lora.r", FT_GGUF_UINT32, p->o.r);
    for (s = 0; s < nsites && r == FT_OK; s++) {
        int64_t ne[2];
        if (!p->A[s]) continue;
        snprintf(name, sizeof name, "blk.%d.%s.weight.lora_a", (int)(s / FT_SITE_COUNT), ft__gguf_site_name((int)(s % FT_SITE_COUNT)));
        ne[0] = p->A[s]->shape[1]; ne[1] = p->A[s]->shape[0];
        r = ft_gguf_add_tensor(w, name, FT_TYPE_F32, 2, ne, p->A[s]->data);
        snprintf(name, sizeof name, "blk.%d.%s.weight.lora_b", (int)(s / FT_SITE_COUNT), ft__gguf_site_name((int)(s % FT_SITE_COUNT)));
        ne[0] = p->B[s]->shape[1]; ne[1] = p->B[s]->shape[0];
        if (r == FT_OK) r = ft_gguf_add_tensor(w, name, FT_TYPE_F32, 2, ne, p->B[s]->data);
    }
    if (r == FT_OK) r = ft_gguf_write(w, path);
    ft_gguf_writer_free(w);
    return r;
}

/* read A and B back from a llama.cpp adapter (or one ft_peft_save wrote) into an
   attached adapter of the same rank and targets. The scale becomes adapter.lora.alpha / r, or
   1 without that key, as llama.cpp applies it. */
static ft_result ft__lora_read_gguf(ft_peft *p, const char *path) {
    ft_gguf *g; ft_result r; int64_t s, nsites; char name[128]; ft_gguf_str st; double alpha;
    if (!p->m) return ft_set_error(FT_ERR_STATE, "%s: the adapter's model was freed", path);
    if ((r = ft_gguf_open(&g, path)) != FT_OK) return r;
    if (!ft_gguf_get_str(g, "adapter.type", &st) || st.n != 4 || memcmp(st.s, "lora", 4) != 0) {
        ft_gguf_close(g); return ft_set_error(FT_ERR_FORMAT, "%s: not a LoRA adapter (adapter.type)", path);
    }
    if (ft_gguf_get_str(g, "general.architecture", &st) && (st.n != strlen(p->m->c.arch_name) || memcmp(st.s, p->m->c.arch_name, (size_t)st.n) != 0)) {
        r = ft_set_error(FT_ERR_FORMAT, "%s: an adapter for '%.*s', but the model is '%s'", path, (int)FT__MIN(st.n, 40), st.s, p->m->c.arch_name);
        ft_gguf_close(g); return r;
    }
    nsites = p->m->c.n_layer * FT_SITE_COUNT;
    for (s = 0; s < nsites; s++) {
        int k;
        for (k = 0; k < 2; k++) {
            ft_tensor *t = k ? p->B[s] : p->A[s]; const ft_gguf_tensor *gt;
            snprintf(name, sizeof name, "blk.%d.%s.weight.lora_%c", (int)(s / FT_SITE_COUNT), ft__gguf_site_name((int)(s % FT_SITE_COUNT)), k ? 'b' : 'a');
            gt = ft_gguf_find_tensor(g, name);
            if (!t && !gt) continue;
            if (!t || !gt) { ft_gguf_close(g); return ft_set_error(FT_ERR_SHAPE, "%s: tensor %s %s", path, name, t ? "is missing" : "has no place in the attached adapter (targets or rank differ)"); }
            if (gt->n_dims != 2 || gt->ne[0] != t->shape[1] || gt->ne[1] != t->shape[0] || !ft__type(gt->type)->to_f32) {
                r = ft_set_error(FT_ERR_SHAPE, "%s: tensor %s is [%lld, %lld] %s, the model needs [%lld, %lld] (wrong base model?)", path, name,
                    (long long)gt->ne[0], (long long)gt->ne[1], ft_type_name(gt->type), (long long)t->shape[1], (long long)t->shape[0]);
                ft_gguf_close(g);                   /* after the message: gt lives in g */
                return r;
            }
            ft__type(gt->type)->to_f32(gt->data, FT__F(t), ft_numel(t));
            t->version++;
        }
    }
    p->scale = ft_gguf_get_float(g, "adapter.lora.alpha", &alpha) && alpha != 0 ? (float)alpha / (float)p->o.r : 1.0f;
    p->o.alpha = p->o.rslora ? p->scale * sqrtf((float)p->o.r) : p->scale * (float)p->o.r;
    ft_gguf_close(g);
    return FT_OK;
}

/* attach an adapter read from a llama.cpp LoRA GGUF: rank, targets and layers from its tensors */
static ft_result ft__lora_attach_gguf(ft_peft **out, ft_model *m, const char *path) {
    ft_gguf *g; ft_result r = FT_OK; ft_lora_opts o; ft__adapter_scan sc; int64_t i; int w; char name[256];
    *out = NULL;
    if ((r = ft_gguf_open(&g, path)) != FT_OK) return r;
    {
        ft_gguf_str st;
        if (!ft_gguf_get_str(g, "adapter.type", &st) || st.n != 4 || memcmp(st.s, "lora", 4) != 0) {
            ft_gguf_close(g); return ft_set_error(FT_ERR_FORMAT, "%s: not a LoRA adapter (no adapter.type \"lora\"; a PEFT directory has adapter_config.json)", path);
        }
    }
    if ((r = ft__adapter_scan_init(&sc, m)) != FT_OK) { ft_gguf_close(g); return r; }
    memset(&o, 0, sizeof o);
    for (i = 0; i < ft_gguf_n_tensors(g) && r == FT_OK; i++) {
        const ft_gguf_tensor *t = ft_gguf_tensor_at(g, i); size_t n = (size_t)FT__MIN(t->name.n, sizeof name - 1); long long l = -1; int used = 0;
        memcpy(name, t->name.s, n); name[n] = 0;
        if (n > 12 && strcmp(name + n - 12, "_norm.weight") == 0) continue;      /* llama.cpp skips these too */
        if (n < 8 || (strcmp(name + n - 7, ".lora_a") != 0 && strcmp(name + n - 7, ".lora_b") != 0)) {
            r = ft_set_error(FT_ERR_FORMAT, "%s: tensor %s is not a LoRA tensor (<weight>.lora_a / .lora_b)", path, name); break;
        }
        if (strcmp(name + n - 7, ".lora_b") == 0) continue;
        for (w = 0; w < FT_SITE_COUNT && !used; w++) {
            char want[64]; int pre = 0;
            snprintf(want, sizeof want, ".%s.weight.lora_a", ft__gguf_site_name(w));
            if (sscanf(name, "blk.%lld%n", &l, &pre) == 1 && pre > 0 && strcmp(name + pre, want) == 0) used = 1;
            if (used) r = ft__adapter_scan_add(&sc, path, name, (int64_t)l, w, t->ne[1]);
        }
        if (!used && r == FT_OK) r = ft_set_error(FT_ERR_UNSUPPORTED, "%s: tensor %s: LoRA on this weight is not supported (the layers' q, k, v, o, gate, up, down are)", path, name);
    }
    ft_gguf_close(g);
    if (r != FT_OK) { FT_FREE(sc.mask); return r; }
    if ((r = ft__adapter_scan_attach_lora(&sc, out, m, &o, path)) != FT_OK) return r;
    if ((r = ft__lora_read_gguf(*out, path)) != FT_OK) { ft_peft_free(*out); *out = NULL; }
    return r;
}

/* ---- PEFT's LoRA: lora_A.weight [r, in], lora_B.weight [out, r], DoRA's lora_magnitude_vector [out];
   adapter_config.json: r, lora_alpha, use_rslora, use_dora, target_modules, layers_to_transform ---- */
static const char *const ft__lora_parts[3] = {"lora_A.weight", "lora_B.weight", "lora_magnitude_vector"};

static ft_result ft__lora_save_peft(ft_peft *p, const char *dir, const char *base_model_name) {
    ft__peft_out o;
    int64_t s;
    ft_result r;
    /* lora_alpha from the scale in use (a llama.cpp adapter read back has only alpha / r) */
    double alpha = p->o.rslora ? (double)p->scale * sqrt((double)p->o.r) : (double)p->scale * p->o.r;
    if ((r = ft__peft_out_init(&o, p, "LORA", base_model_name, 0)) != FT_OK) return r;
    for (s = 0; s < p->m->c.n_layer * FT_SITE_COUNT; s++) {
        if (!p->A[s]) continue;
        ft__peft_out_site(&o, p->m, s, ft__lora_parts[0], p->A[s], p->A[s]->shape[0], p->A[s]->shape[1], 0);
        ft__peft_out_site(&o, p->m, s, ft__lora_parts[1], p->B[s], p->B[s]->shape[0], p->B[s]->shape[1], 1);
        if (p->mag[s]) ft__peft_out_site(&o, p->m, s, ft__lora_parts[2], p->mag[s], p->mag[s]->shape[0], 0, 1);
    }
    ft__peft_out_cfg(&o, ",\n  \"r\": %d,\n  \"lora_alpha\": %.9g,\n  \"lora_dropout\": %g,\n  \"use_rslora\": %s,\n  \"use_dora\": %s,\n"
                     "  \"bias\": \"none\",\n  \"fan_in_fan_out\": false,\n  \"init_lora_weights\": true",
                     p->o.r, alpha, (double)p->o.dropout, p->o.rslora ? "true" : "false", p->o.dora ? "true" : "false");
    ft__peft_out_sites(&o, p);
    return ft__peft_out_write(&o, dir);
}

static ft_result ft__lora_read_peft(ft_peft *p, const char *dir) {
    ft_safetensors *st; ft_result r = FT_OK; char path[1024], name[160]; int64_t s; int k;
    if (!p->m) return ft_set_error(FT_ERR_STATE, "%s: the adapter's model was freed", dir);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if ((r = ft_safetensors_open(&st, path)) != FT_OK) return r;
    for (s = 0; s < p->m->c.n_layer * FT_SITE_COUNT && r == FT_OK; s++) {
        int64_t heads = ft__site_permuted_heads(p->m, (int)(s % FT_SITE_COUNT));
        for (k = 0; k < 3 && r == FT_OK; k++) {
            ft_tensor *t = k == 0 ? p->A[s] : k == 1 ? p->B[s] : p->mag[s];
            const char *dt; int64_t shape[8]; int nd; const void *d;
            ft__peft_site_name(name, sizeof name, s, ft__lora_parts[k]);
            d = ft_safetensors_get(st, name, &dt, shape, &nd);
            if (!t && !d) continue;
            if (!t || !d || nd != t->ndim || shape[0] != t->shape[0] || (nd > 1 && shape[1] != t->shape[1]))
                r = ft_set_error(FT_ERR_SHAPE, "%s: tensor %s: %s", path, name, !t ? "has no place in the attached adapter (targets or rank differ)" : !d ? "is missing" : "has a shape the model does not fit (wrong base model?)");
            else r = ft__peft_in_tensor(t, st, path, name, p->m, k > 0 ? heads : 0, k == 1 ? t->shape[1] : 1);
        }
    }
    ft_safetensors_close(st);
    return r;
}

/* attach an adapter from a PEFT directory: alpha, rsLoRA, DoRA from adapter_config.json; rank,
   targets and layers from the tensors in adapter_model.safetensors */
static ft_result ft__lora_config(ft_lora_opts *o, const char *dir) {
    ft_json_doc *doc; const ft_json *root, *v; ft_result r; char path[1024]; double alpha, rank;
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    if ((r = ft__peft_read_config(dir, &doc)) != FT_OK) return r;
    root = ft_json_root(doc);
    if ((v = ft_json_get(root, "peft_type")) && (v->kind != FT_JSON_STRING || strcmp(v->s, "LORA") != 0))
        r = ft_set_error(FT_ERR_UNSUPPORTED, "%s: peft_type %s (LORA is read here)", path, v->kind == FT_JSON_STRING ? v->s : "?");
    else if ((v = ft_json_get(root, "fan_in_fan_out")) && v->kind == FT_JSON_BOOL && v->num != 0)
        r = ft_set_error(FT_ERR_UNSUPPORTED, "%s: fan_in_fan_out is not supported", path);
    else if ((v = ft_json_get(root, "lora_bias")) && v->kind == FT_JSON_BOOL && v->num != 0)
        r = ft_set_error(FT_ERR_UNSUPPORTED, "%s: lora_bias is not supported", path);
    else if ((v = ft_json_get(root, "bias")) && v->kind == FT_JSON_STRING && strcmp(v->s, "none") != 0)
        r = ft_set_error(FT_ERR_UNSUPPORTED, "%s: bias \"%s\" is not supported (\"none\" is)", path, v->s);
    else if (((v = ft_json_get(root, "rank_pattern")) && v->kind == FT_JSON_OBJECT && v->n) || ((v = ft_json_get(root, "alpha_pattern")) && v->kind == FT_JSON_OBJECT && v->n))
        r = ft_set_error(FT_ERR_UNSUPPORTED, "%s: rank_pattern / alpha_pattern (a rank or alpha per module) is not supported", path);
    if ((v = ft_json_get(root, "use_rslora")) && v->kind == FT_JSON_BOOL) o->rslora = v->num != 0;
    if ((v = ft_json_get(root, "use_dora")) && v->kind == FT_JSON_BOOL) o->dora = v->num != 0;
    alpha = o->alpha;
    rank = o->r;
    if (r == FT_OK && (r = ft__peft_cfg_number(root, "lora_alpha", 0, 1e6, 0, &alpha, dir)) == FT_OK)
        r = ft__peft_cfg_number(root, "r", 1, 65536, 1, &rank, dir);
    o->alpha = (float)alpha;
    o->r = (int)rank;
    ft_json_free(doc);
    return r;
}
static ft_result ft__lora_attach_peft(ft_peft **out, ft_model *m, const char *dir) {
    ft_peft_opts o = ft_peft_opts_default(FT_PEFT_LORA);
    ft_safetensors *st;
    ft_result r;
    int r_config;
    char path[1024];
    *out = NULL;
    memset(&o.lora, 0, sizeof o.lora);
    if ((r = ft__lora_config(&o.lora, dir)) != FT_OK) return r;
    r_config = o.lora.r;
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if ((r = ft_safetensors_open(&st, path)) != FT_OK) return r;
    r = ft__peft_scan_attach(out, m, &o, st, path, ft__lora_parts, 3, 0);
    ft_safetensors_close(st);
    if (r == FT_OK && r_config && (*out)->o.r != r_config)
        r = ft_set_error(FT_ERR_FORMAT, "%s: the tensors have rank %d, adapter_config.json says r = %d", path, (*out)->o.r, r_config);
    if (r == FT_OK) r = ft__lora_read_peft(*out, dir);
    if (r != FT_OK && *out) { ft_peft_free(*out); *out = NULL; }
    return r;
}

/* ============================================================================================
   LoHa (Hyeon-Woo et al. 2022, FedPara; PEFT's LoHaConfig on linear layers): a low-rank
   Hadamard product as the weight update,
     y = x W^T + x dW^T,   dW = s (w1_a w1_b) * (w2_a w2_b)   (elementwise), s = alpha / r,
   w1_a, w2_a (out, r), w1_b, w2_b (r, in); PEFT's init: w1_a, w1_b, w2_a kaiming-uniform
   (bound 1/sqrt(fan_in)), w2_b = 0, so the model starts unchanged. Rank r gives dW a rank up to
   r^2 for the parameters of a rank-2r LoRA. dW is made whole each forward, as PEFT makes it.
   ============================================================================================ */
static ft_result ft__loha_add(ft_peft *p) {
    ft_model *m = p->m; int64_t l, nsites = m->c.n_layer * FT_SITE_COUNT; int w, k; ft_result r;
    static const char *part[4] = {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"};
    if (p->o.targets & (FT_TARGET_EMBED | FT_TARGET_HEAD)) return ft_set_error(FT_ERR_UNSUPPORTED, "loha: the linear layers of the blocks only");
    p->scale = p->o.alpha / (float)p->o.r;
    if ((r = ft__peft_slots(&p->hada, nsites * 4)) != FT_OK) return r;
    for (l = 0; l < m->c.n_layer; l++) for (w = 0; w < FT_SITE_COUNT; w++) {
        ft_tensor *W = *ft__site_weight(m, l, w);
        if (!W || !ft__layer_on(p->o.layer_mask, l) || !(p->o.targets & (1u << w))) continue;
        for (k = 0; k < 4; k++) {
            char name[128];
            int64_t rows = k % 2 ? p->o.r : W->shape[0], cols = k % 2 ? W->shape[1] : p->o.r;
            snprintf(name, sizeof name, "layers.%d.%s.%s", (int)l, ft_site_name(w), part[k]);
            if ((r = ft__peft_param(p, &p->hada[(l * FT_SITE_COUNT + w) * 4 + k], name, 2, rows, cols)) != FT_OK) return r;
        }
    }
    return ft_params_count(p->P) ? FT_OK : ft_set_error(FT_ERR_INVALID, "loha: no layer matches the targets");
}
static ft_result ft__loha_init(ft_peft *p, ft_rng *rng) {
    int64_t s, nsites = p->m->c.n_layer * FT_SITE_COUNT;
    for (s = 0; s < nsites; s++) {
        ft_tensor **h = p->hada + s * 4;
        if (!h[0]) continue;
        ft__init_kaiming(h[0], h[0]->shape[1], rng);
        ft__init_kaiming(h[1], h[1]->shape[1], rng);
        ft__init_kaiming(h[2], h[2]->shape[1], rng);
        ft__init_const(h[3], 0.0f);
    }
    return FT_OK;
}
static ft_tensor *ft__loha_linear(ft_ctx *ctx, ft_peft *p, ft_tensor *x, ft_tensor *W, ft_tensor *bias, int64_t l, int which) {
    ft_tensor **h = l < 0 || p->orig ? NULL : p->hada + (l * FT_SITE_COUNT + which) * 4, *dW, *y;
    if (!h || !h[0]) return ft__plain_linear(ctx, x, W, bias);
    dW = ft_scale(ctx, ft_mul(ctx, ft_matmul(ctx, h[0], h[1], 0, 0), ft_matmul(ctx, h[2], h[3], 0, 0)), p->scale);
    y = ft_add(ctx, ft_matmul(ctx, x, W, 0, 1), ft_matmul(ctx, x, dW, 0, 1));
    return bias ? ft_add(ctx, y, bias) : y;
}
static int ft__loha_delta(const ft_peft *p, int64_t s) { return p->hada[s * 4] != NULL; }
/* row o of W + dW: row += s (w1_a[o, :] w1_b) * (w2_a[o, :] w2_b) */
static void ft__loha_merge_row(const ft_peft *p, int64_t s, int64_t o, float *row, int64_t in) {
    ft_tensor *const *h = p->hada + s * 4;
    int64_t r = h[0]->shape[1], k, j;
    for (j = 0; j < in; j++) {
        double a = 0, b = 0;
        for (k = 0; k < r; k++) {
            a += (double)FT__F(h[0])[o * r + k] * FT__F(h[1])[k * in + j];
            b += (double)FT__F(h[2])[o * r + k] * FT__F(h[3])[k * in + j];
        }
        row[j] += p->scale * (float)(a * b);
    }
}

/* ---- PEFT's LoHa: hada_w1_a, hada_w1_b, hada_w2_a, hada_w2_b, [out, r] and [r, in] as ours; the
   output-side factors (w1_a, w2_a) of q_proj and k_proj carry the converter's row permutation (a
   row permutation of both permutes the rows of dW = (w1_a w1_b) * (w2_a w2_b) the same way).
   adapter_config.json: peft_type LOHA, r, alpha, target_modules, layers_to_transform ------------- */
static const char *const ft__hada_names[4] = {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"};

static ft_result ft__loha_save_peft(ft_peft *p, const char *dir, const char *base_model_name) {
    ft__peft_out o;
    int64_t s;
    int k;
    ft_result r;
    if ((r = ft__peft_out_init(&o, p, "LOHA", base_model_name, 0)) != FT_OK) return r;
    for (s = 0; s < p->m->c.n_layer * FT_SITE_COUNT; s++)
        for (k = 0; p->hada[s * 4] && k < 4; k++) {
            ft_tensor *t = p->hada[s * 4 + k];
            ft__peft_out_site(&o, p->m, s, ft__hada_names[k], t, t->shape[0], t->shape[1], k % 2 == 0);
        }
    ft__peft_out_cfg(&o, ",\n  \"r\": %d,\n  \"alpha\": %.9g,\n  \"rank_dropout\": 0.0,\n  \"module_dropout\": 0.0,\n  \"init_weights\": true,\n"
                     "  \"use_effective_conv2d\": false", p->o.r, (double)p->o.alpha);
    ft__peft_out_sites(&o, p);
    return ft__peft_out_write(&o, dir);
}

/* read every hada_* tensor into the attached LoHa adapter (HF row order undone) */
static ft_result ft__loha_read(ft_peft *p, ft_safetensors *st, const char *path) {
    int64_t i;
    ft_result r = FT_OK;
    for (i = 0; i < ft_safetensors_count(st) && r == FT_OK; i++) {
        const char *nm = ft_safetensors_name(st, i), *dt;
        long long l;
        int k, w, nd;
        int64_t shape[8];
        ft_tensor *t;
        if (!nm || strcmp(nm, "__metadata__") == 0) continue;
        w = ft__peft_site_key(nm, ft__hada_names, 4, &l, &k);
        t = w >= 0 && l >= 0 && l < p->m->c.n_layer ? p->hada[(l * FT_SITE_COUNT + w) * 4 + k] : NULL;
        ft_safetensors_get(st, nm, &dt, shape, &nd);
        if (!t || nd != 2 || shape[0] != t->shape[0] || shape[1] != t->shape[1])
            r = ft_set_error(FT_ERR_SHAPE, "%s: tensor %s: %s", path, nm, t ? "has a shape the model does not fit (wrong base model?)" : "not a LoHa tensor of the attached sites");
        else r = ft__peft_in_tensor(t, st, path, nm, p->m, k % 2 == 0 ? ft__site_permuted_heads(p->m, w) : 0, t->shape[1]);
    }
    return r;
}

/* attach a PEFT LoHa directory: alpha from adapter_config.json; rank, targets and layers from the
   tensors (hada_w1_a gives the rank) */
static ft_result ft__loha_attach_peft(ft_peft **out, ft_model *m, const char *dir) {
    ft_json_doc *doc; const ft_json *root, *v; ft_peft_opts o = ft_peft_opts_default(FT_PEFT_LOHA);
    ft_safetensors *st; ft_result r; char path[1024]; double alpha;
    *out = NULL;
    if ((r = ft__peft_read_config(dir, &doc)) != FT_OK) return r;
    root = ft_json_root(doc);
    alpha = 0;
    r = ft__peft_cfg_number(root, "alpha", 0, 1e6, 0, &alpha, dir);
    o.lora.alpha = (float)alpha;
    if (r == FT_OK && (((v = ft_json_get(root, "rank_dropout")) && v->kind == FT_JSON_NUMBER && v->num != 0) ||
        ((v = ft_json_get(root, "module_dropout")) && v->kind == FT_JSON_NUMBER && v->num != 0) ||
        ((v = ft_json_get(root, "rank_pattern")) && v->kind == FT_JSON_OBJECT && v->n) || ((v = ft_json_get(root, "alpha_pattern")) && v->kind == FT_JSON_OBJECT && v->n)))
        r = ft_set_error(FT_ERR_UNSUPPORTED, "%s/adapter_config.json: rank / module dropout and per-module ranks or alphas are not supported", dir);
    ft_json_free(doc);
    if (r != FT_OK) return r;
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if ((r = ft_safetensors_open(&st, path)) != FT_OK) return r;
    r = ft__peft_scan_attach(out, m, &o, st, path, ft__hada_names, 4, 1);
    if (r == FT_OK && (r = ft__loha_read(*out, st, path)) != FT_OK) { ft_peft_free(*out); *out = NULL; }
    ft_safetensors_close(st);
    return r;
}

/* ---- merging a weight delta into the weights (LoRA, DoRA, LoHa) ----------------------------------------
   W' = W + dW into owned f32 weights (DoRA: m / ||W'|| * W'); the forward then uses W' alone. The
   mapped base stays untouched, so unmerge just restores the original headers. */
FT_API ft_result ft_peft_merge(ft_peft *p) {
    ft_model *m = p->m; int64_t s, nsites = m->c.n_layer * FT_SITE_COUNT, total = 0, off = 0;
    if (!p->impl->merge_row) return ft_set_error(FT_ERR_UNSUPPORTED, "merge: a %s method has no weights to merge into", ft_peft_method_name(p->kind));
    if (p->orig) return ft_set_error(FT_ERR_STATE, "merge: already merged");
    if (p->emb_A || p->head_A) return ft_set_error(FT_ERR_UNSUPPORTED, "merge: LoRA on the embedding or the head is not merged (keep it as an adapter)");
    if (p->expA || p->router) return ft_set_error(FT_ERR_UNSUPPORTED, "merge: LoRA on experts and trained routers are not merged yet (keep it as an adapter)");
    for (s = 0; s < nsites; s++) if (p->impl->delta(p, s)) total += ft_numel(*ft__site_weight(m, s / FT_SITE_COUNT, (int)(s % FT_SITE_COUNT)));
    p->orig = FT__CAST(ft_tensor **, FT_MALLOC((size_t)nsites * sizeof(ft_tensor *)));
    p->merged = FT__CAST(ft_tensor *, FT_MALLOC((size_t)nsites * sizeof(ft_tensor)));
    p->merged_data = FT__CAST(float *, ft__aligned_alloc((size_t)FT__MAX(total, 1) * sizeof(float)));
    if (!p->orig || !p->merged || !p->merged_data) {
        FT_FREE(p->orig); FT_FREE(p->merged); ft__aligned_free(p->merged_data); p->orig = NULL; p->merged = NULL; p->merged_data = NULL;
        return ft_set_error(FT_ERR_NOMEM, "merge: %lld floats", (long long)total);
    }
    for (s = 0; s < nsites; s++) {
        ft_tensor **slot = ft__site_weight(m, s / FT_SITE_COUNT, (int)(s % FT_SITE_COUNT)), *W = *slot, *M = &p->merged[s];
        int64_t o, out, in;
        p->orig[s] = W;
        if (!W || !p->impl->delta(p, s)) continue;
        out = W->shape[0]; in = W->shape[1];
        *M = *W; M->type = FT_TYPE_F32; M->data = p->merged_data + off; M->grad = NULL; M->nf4 = NULL; off += out * in;
        for (o = 0; o < out; o++) {
            float *row = FT__F(M) + o * in;
            ft__weight_row(W, o, 0, in, row);
            p->impl->merge_row(p, s, o, row, in);
        }
        *slot = M;
    }
    return FT_OK;
}
FT_API ft_result ft_peft_unmerge(ft_peft *p) {
    ft_model *m = p->m; int64_t s, nsites = m->c.n_layer * FT_SITE_COUNT;
    if (!p->orig) return ft_set_error(FT_ERR_STATE, "unmerge: not merged");
    for (s = 0; s < nsites; s++) *ft__site_weight(m, s / FT_SITE_COUNT, (int)(s % FT_SITE_COUNT)) = p->orig[s];
    FT_FREE(p->orig); FT_FREE(p->merged); ft__aligned_free(p->merged_data);
    p->orig = NULL; p->merged = NULL; p->merged_data = NULL;
    return FT_OK;
}
/* the merged weights become the model's for good */
static ft_result ft__merge_bake(ft_peft *p) {
    ft_model *m = p->m; ft_result r;
    if (!p->orig && (r = ft_peft_merge(p)) != FT_OK) return r;
    m->baked[m->n_baked] = p->merged;
    m->baked_data[m->n_baked++] = p->merged_data;    /* the model owns them now */
    FT_FREE(p->orig);
    p->orig = NULL; p->merged = NULL; p->merged_data = NULL;
    return FT_OK;
}
static void ft__merge_detach(ft_peft *p) { if (p->orig) ft_peft_unmerge(p); }

/* ============================================================================================
   Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020): on a sublayer's output y, before
     the residual add, y + up(act(down(y))); down (k, C) kaiming-uniform, up (C, k) and both biases
     zero, so the model starts unchanged. Houlsby: after attention and after the MLP; Pfeiffer:
     after the MLP only.
   ============================================================================================ */
static ft_result ft__adapter_add(ft_peft *p) {
    int64_t l, L = p->m->c.n_layer, C = p->m->c.n_embd; int pl; ft_result r;
    static const char *part[4] = {"down.weight", "down.bias", "up.weight", "up.bias"};
    if ((r = ft__peft_slots(&p->ad, L * 8)) != FT_OK) return r;
    for (l = 0; l < L; l++) for (pl = 0; pl < 2; pl++) {
        ft_tensor **a = p->ad + (l * 2 + pl) * 4; int k;
        if (!ft__layer_on(p->po.layer_mask, l) || (pl == 0 && p->po.placement == FT_ADAPTER_PFEIFFER)) continue;
        for (k = 0; k < 4; k++) {
            char name[160];
            int64_t rows = k < 2 ? p->po.bottleneck : C, cols = k % 2 ? 1 : k < 2 ? C : p->po.bottleneck;
            snprintf(name, sizeof name, "layers.%d.adapter_%s.%s", (int)l, pl ? "mlp" : "attn", part[k]);
            if ((r = ft__peft_param(p, &a[k], name, k % 2 ? 1 : 2, rows, cols)) != FT_OK) return r;
        }
    }
    return FT_OK;
}
static ft_result ft__adapter_init(ft_peft *p, ft_rng *rng) {
    int64_t l, L = p->m->c.n_layer;
    for (l = 0; l < L * 2; l++) if (p->ad[l * 4]) {
        ft__init_kaiming(p->ad[l * 4], p->m->c.n_embd, rng);
        ft__init_const(p->ad[l * 4 + 1], 0);
        ft__init_const(p->ad[l * 4 + 2], 0);
        ft__init_const(p->ad[l * 4 + 3], 0);
    }
    return FT_OK;
}
static ft_tensor *ft__act(ft_ctx *ctx, ft_act a, ft_tensor *x) {
    switch (a) {
    case FT_ACT_GELU: return ft_gelu(ctx, x);
    case FT_ACT_SILU: return ft_silu(ctx, x);
    case FT_ACT_TANH: return ft_tanh(ctx, x);
    default: return ft_relu(ctx, x);
    }
}
/* a sublayer's output y (place 0: attention, 1: MLP) through the layer's bottleneck adapter */
static ft_tensor *ft__adapter_after(ft_ctx *ctx, ft_peft *p, int64_t l, int place, ft_tensor *y) {
    ft_tensor **a = p->ad + (l * 2 + place) * 4, *d;
    if (!a[0]) return y;
    d = ft__act(ctx, p->po.act, ft_add(ctx, ft_matmul(ctx, y, a[0], 0, 1), a[1]));
    return ft_add(ctx, y, ft_add(ctx, ft_matmul(ctx, d, a[2], 0, 1), a[3]));
}

/* ============================================================================================
   Prefix tuning (Li & Liang 2021, PEFT's layout): a table (P, n_layer * 2 * kv_dim) whose slices
     are every layer's extra keys and values (layer l: columns 2l and 2l+1 of kv_dim each), seen by
     every query; with reparameterisation the table is W2 tanh(W1 E + b1) + b2 from an embedding
     E (P, kv_dim). As in transformers with a P-token cache, the real tokens sit at positions P, P+1..
   Prompt tuning (Lester et al. 2021): P soft token embeddings (P, C) in front of every sequence at
     positions 0..P-1; the hidden states of the real tokens come out.
   ============================================================================================ */
static ft_result ft__prefix_add(ft_peft *p) {
    int64_t L = p->m->c.n_layer, Dkv = p->m->c.n_head_kv * p->m->c.head_dim, P = p->po.n_virtual, H = p->po.prefix_hidden;
    ft_result r = FT_OK;
    if (H <= 0) return ft__peft_param(p, &p->pre[0], "prefix.embedding", 2, P, L * 2 * Dkv);
    if (r == FT_OK) r = ft__peft_param(p, &p->pre[0], "prefix.embedding", 2, P, Dkv);
    if (r == FT_OK) r = ft__peft_param(p, &p->pre[1], "prefix.mlp.0.weight", 2, H, Dkv);
    if (r == FT_OK) r = ft__peft_param(p, &p->pre[2], "prefix.mlp.0.bias", 1, H, 1);
    if (r == FT_OK) r = ft__peft_param(p, &p->pre[3], "prefix.mlp.2.weight", 2, L * 2 * Dkv, H);
    if (r == FT_OK) r = ft__peft_param(p, &p->pre[4], "prefix.mlp.2.bias", 1, L * 2 * Dkv, 1);
    return r;
}
static ft_result ft__prefix_init(ft_peft *p, ft_rng *rng) {      /* as PEFT: N(0, 1) embedding, torch Linear init */
    int64_t Dkv = p->m->c.n_head_kv * p->m->c.head_dim;
    ft__init_normal(p->pre[0], 1.0f, rng);
    if (!p->pre[1]) return FT_OK;
    ft__init_kaiming(p->pre[1], Dkv, rng);
    ft__init_kaiming(p->pre[2], Dkv, rng);
    ft__init_kaiming(p->pre[3], p->po.prefix_hidden, rng);
    ft__init_kaiming(p->pre[4], p->po.prefix_hidden, rng);
    return FT_OK;
}
/* the (P, n_layer * 2 * kv_dim) table of keys and values, on the tape */
static ft_tensor *ft__prefix_table(ft_ctx *ctx, ft_peft *p) {
    if (!p->pre[1]) return p->pre[0];
    return ft_add(ctx, ft_matmul(ctx, ft_tanh(ctx, ft_add(ctx, ft_matmul(ctx, p->pre[0], p->pre[1], 0, 1), p->pre[2])), p->pre[3], 0, 1), p->pre[4]);
}
static ft_result ft__prompt_add(ft_peft *p) {
    return ft__peft_param(p, &p->prompt, "prompt.embedding", 2, p->po.n_virtual, p->m->c.n_embd);
}
/* random N(0, 1) (PEFT's default), or the embeddings of random vocabulary tokens or of a text's
   tokens, repeated to fill as PEFT does */
static ft_result ft__prompt_init(ft_peft *p, ft_rng *rng) {
    ft_model *m = p->m; int64_t P = p->po.n_virtual, i, V = m->tok_embd->shape[0], n = 0; int32_t *ids;
    if (p->po.prompt_init == FT_PROMPT_RANDOM) { ft__init_normal(p->prompt, 1.0f, rng); return FT_OK; }
    ids = FT__CAST(int32_t *, FT_MALLOC((size_t)(P + 4096) * sizeof(int32_t)));
    if (!ids) return ft_set_error(FT_ERR_NOMEM, "peft: out of memory");
    if (p->po.prompt_init == FT_PROMPT_TEXT) {
        const char *text = p->po.prompt_text;
        if (!text || !m->tok) { FT_FREE(ids); return ft_set_error(FT_ERR_INVALID, "prompt tuning: text init needs a text and the model's tokenizer"); }
        n = ft_tokenize(m->tok, text, (int64_t)strlen(text), ids, 4096, 0, 0);
        if (n <= 0) { FT_FREE(ids); return ft_set_error(FT_ERR_INVALID, "prompt tuning: the init text gives no tokens"); }
        n = FT__MIN(n, 4096);
        for (i = n; i < P; i++) ids[i] = ids[i % n];
    } else for (i = 0; i < P; i++) ids[i] = (int32_t)(ft_rng_u64(rng) % (uint64_t)V);
    for (i = 0; i < P; i++) ft__weight_row(m->tok_embd, ids[i], 0, m->c.n_embd, FT__F(p->prompt) + i * m->c.n_embd);
    FT_FREE(ids);
    return FT_OK;
}
static ft_tensor *ft__prompt_table(ft_ctx *ctx, ft_peft *p) { (void)ctx; return p->prompt; }

/* ---- PEFT's prompt and prefix tuning: one table, prompt_embeddings, for a CAUSAL_LM model
   (tuners/prefix_tuning/model.py, peft_model.py get_prompt, utils/other.py
   _prepare_prompt_learning_config):
   PROMPT  [P, n_embd]; config token_dim = n_embd, num_attention_heads = n_head.
   PREFIX  [P, n_layer * 2 * kv_dim]: row i, layer l's key at columns [2l kv_dim, (2l+1) kv_dim)
           as (kv_heads, head_dim), its value next (get_prompt views it (P, 2L, kv_heads,
           head_dim)). With the reparameterisation MLP PEFT saves the MLP's output (and loads
           it, in inference mode, as a plain table): so do we, and reading back gives a plain
           table. GQA: token_dim = kv_dim and num_attention_heads = n_head_kv, as PEFT writes.
           Keys: HF scores rotate_half-rotated queries (pairs j, j + D/2) against them, we score
           our queries (the converter's permuted rows, adjacent pairs) against ours: our key dim
           2j is HF's j and 2j+1 is HF's j + D/2 in every head -- k_proj's row permutation.
           Values: unchanged.
   ------------------------------------------------------------------------------------------------ */
/* the prefix table (P, n_layer * 2 * kv_dim) between our key order and HF's (to_hf); dst != src */
static void ft__prefix_permute(float *dst, const float *src, const ft_model *m, int64_t P, int to_hf) {
    int64_t Dkv = m->c.n_head_kv * m->c.head_dim, W = m->c.n_layer * 2 * Dkv, heads = ft__site_permuted_heads(m, FT_SITE_K), i, l;
    memcpy(dst, src, (size_t)(P * W) * sizeof(float));
    if (heads) for (i = 0; i < P; i++) for (l = 0; l < m->c.n_layer; l++)
        ft__permute_rows(dst + i * W + 2 * l * Dkv, src + i * W + 2 * l * Dkv, heads, m->c.head_dim, 1, to_hf);
}
/* the table's width: n_embd (prompt) or n_layer * 2 * kv_dim (prefix) */
static int64_t ft__prompt_width(const ft_model *m, ft_peft_method method) {
    return method == FT_PEFT_PROMPT ? m->c.n_embd : m->c.n_layer * 2 * m->c.n_head_kv * m->c.head_dim;
}
static ft_result ft__prompt_save_peft(ft_peft *p, const char *dir, const char *base_model_name) {
    ft__peft_out o;
    ft_result r;
    const ft_model *m = p->m;
    if ((r = ft__peft_out_init(&o, p, "PROMPT_TUNING", base_model_name, 0)) != FT_OK) return r;
    ft__peft_out_tensor(&o, "prompt_embeddings", p->po.n_virtual, m->c.n_embd, FT__F(p->prompt));
    /* the init matters only before training (PEFT ignores it in inference mode); its TEXT would
       need a tokenizer repository to load, so a text init is written as RANDOM */
    ft__peft_out_cfg(&o, ",\n  \"num_virtual_tokens\": %d,\n  \"token_dim\": %lld,\n  \"num_transformer_submodules\": 1,\n  \"num_attention_heads\": %lld,\n"
                     "  \"num_layers\": %lld,\n  \"prompt_tuning_init\": \"%s\",\n  \"prompt_tuning_init_text\": null,\n  \"tokenizer_name_or_path\": null,\n"
                     "  \"tokenizer_kwargs\": null", p->po.n_virtual, (long long)m->c.n_embd, (long long)m->c.n_head, (long long)m->c.n_layer,
                     p->po.prompt_init == FT_PROMPT_VOCAB ? "SAMPLE_VOCAB" : "RANDOM");
    return ft__peft_out_write(&o, dir);
}
/* the prefix table in HF's order: the MLP's output (computed as the forward does) or the table */
static ft_result ft__prefix_table_hf(ft_peft *p, float *dst) {
    ft_tensor *tab = p->pre[0];
    ft_ctx *ctx = NULL;
    ft_ctx_opts co = ft_ctx_opts_default();
    int64_t P = p->po.n_virtual, W = ft__prompt_width(p->m, FT_PEFT_PREFIX);
    ft_result r = FT_OK;
    if (p->pre[1]) {
        co.arena_bytes = (size_t)(P * (2 * p->po.prefix_hidden + 2 * W)) * sizeof(float) + ((size_t)1 << 20);
        if ((r = ft_ctx_init(&ctx, &co)) != FT_OK) return r;
        ft_ctx_set_grad(ctx, 0);
        tab = ft__prefix_table(ctx, p);
        if (!tab || tab->type != FT_TYPE_F32 || ft_numel(tab) != P * W)
            r = ft_set_error(ft_ctx_status(ctx) != FT_OK ? ft_ctx_status(ctx) : FT_ERR_STATE, "the prefix MLP: %s", ft_last_error());
    }
    if (r == FT_OK) ft__prefix_permute(dst, FT__F(tab), p->m, P, 1);
    ft_ctx_free(ctx);
    return r;
}
static ft_result ft__prefix_save_peft(ft_peft *p, const char *dir, const char *base_model_name) {
    ft__peft_out o;
    ft_result r;
    const ft_model *m = p->m;
    int64_t P = p->po.n_virtual, W = ft__prompt_width(m, FT_PEFT_PREFIX);
    float *hf;
    if ((r = ft__peft_out_init(&o, p, "PREFIX_TUNING", base_model_name, P * W)) != FT_OK) return r;
    hf = ft__peft_out_scratch(&o, P * W);
    if (hf && (r = ft__prefix_table_hf(p, hf)) != FT_OK) { ft__peft_out_free(&o); return ft_set_error(r, "%s: %s", dir, ft_last_error()); }
    ft__peft_out_tensor(&o, "prompt_embeddings", P, W, hf);
    ft__peft_out_cfg(&o, ",\n  \"num_virtual_tokens\": %lld,\n  \"token_dim\": %lld,\n  \"num_transformer_submodules\": 1,\n  \"num_attention_heads\": %lld,\n"
                     "  \"num_layers\": %lld,\n  \"encoder_hidden_size\": %lld,\n  \"prefix_projection\": %s,\n  \"init_weights\": null",
                     (long long)P, (long long)(m->c.n_head_kv * m->c.head_dim), (long long)m->c.n_head_kv, (long long)m->c.n_layer,
                     (long long)(p->pre[1] ? p->po.prefix_hidden : m->c.n_head_kv * m->c.head_dim), p->pre[1] ? "true" : "false");
    return ft__peft_out_write(&o, dir);
}

/* a prompt-learning config for this model (a decoder-only CAUSAL_LM, its layers, the table's
   token_dim and heads); num_virtual_tokens into o->n_virtual (0: not given) */
static ft_result ft__prompt_config(ft_peft_opts *o, const ft_model *m, const char *dir) {
    ft_json_doc *doc; const ft_json *root, *v; ft_result r; char cpath[1024]; double n_virtual;
    int prefix = o->method == FT_PEFT_PREFIX;
    int64_t dim = prefix ? m->c.n_head_kv * m->c.head_dim : m->c.n_embd;
    if ((r = ft__peft_read_config(dir, &doc)) != FT_OK) return r;
    root = ft_json_root(doc);
    snprintf(cpath, sizeof cpath, "%s/adapter_config.json", dir);
    if ((v = ft_json_get(root, "task_type")) && v->kind == FT_JSON_STRING && strcmp(v->s, "CAUSAL_LM") != 0)
        r = ft_set_error(FT_ERR_UNSUPPORTED, "%s: task_type %s (a decoder-only CAUSAL_LM prompt is read)", cpath, v->s);
    else if ((v = ft_json_get(root, "num_transformer_submodules")) && v->kind == FT_JSON_NUMBER && v->num != 1)
        r = ft_set_error(FT_ERR_UNSUPPORTED, "%s: num_transformer_submodules %g (1, a decoder-only model, is read)", cpath, v->num);
    else if ((v = ft_json_get(root, "num_layers")) && v->kind == FT_JSON_NUMBER && v->num != (double)m->c.n_layer)
        r = ft_set_error(FT_ERR_SHAPE, "%s: num_layers %g, the model has %lld (wrong base model?)", cpath, v->num, (long long)m->c.n_layer);
    else if ((v = ft_json_get(root, "token_dim")) && v->kind == FT_JSON_NUMBER && v->num != (double)dim)
        r = ft_set_error(FT_ERR_SHAPE, "%s: token_dim %g, the model's %s %lld (%swrong base model?)", cpath, v->num,
                         prefix ? "keys have" : "n_embd is", (long long)dim, prefix ? "n_head_kv x head_dim; " : "");
    else if (prefix && (v = ft_json_get(root, "num_attention_heads")) && v->kind == FT_JSON_NUMBER && v->num != (double)m->c.n_head_kv)
        r = ft_set_error(FT_ERR_SHAPE, "%s: num_attention_heads %g, the model has %lld KV heads (wrong base model?)", cpath, v->num, (long long)m->c.n_head_kv);
    n_virtual = 0;
    if (r == FT_OK) r = ft__peft_cfg_number(root, "num_virtual_tokens", 1, 1e6, 1, &n_virtual, dir);
    o->n_virtual = (int)n_virtual;
    ft_json_free(doc);
    return r;
}
/* the file holds prompt_embeddings alone, [P, width] (P as the config says, when it says) */
static ft_result ft__prompt_check_file(const ft_safetensors *st, const char *path, const ft_peft_opts *o, int64_t W, int64_t *P) {
    const char *dt; int nd = 0; int64_t i, sh[8];
    const void *d = ft_safetensors_get(st, "prompt_embeddings", &dt, sh, &nd);
    for (i = 0; i < ft_safetensors_count(st); i++) {
        const char *nm = ft_safetensors_name(st, i);
        if (nm && strcmp(nm, "__metadata__") != 0 && strcmp(nm, "prompt_embeddings") != 0)
            return ft_set_error(FT_ERR_UNSUPPORTED, "%s: tensor %s: only prompt_embeddings is read (modules_to_save are not supported)", path, nm);
    }
    if (!d) return ft_set_error(FT_ERR_FORMAT, "%s: no prompt_embeddings", path);
    if (nd != 2 || sh[1] != W || sh[0] < 1 || (o->n_virtual && sh[0] != o->n_virtual))
        return ft_set_error(FT_ERR_SHAPE, "%s: prompt_embeddings is [%lld, %lld], the model needs [%d, %lld] (%s; wrong base model?)", path, (long long)sh[0], nd > 1 ? (long long)sh[1] : 0LL,
                            o->n_virtual ? o->n_virtual : (int)sh[0], (long long)W, o->method == FT_PEFT_PROMPT ? "num_virtual_tokens x n_embd" : "num_virtual_tokens x n_layer * 2 * n_head_kv * head_dim");
    *P = sh[0];
    return FT_OK;
}
/* attach a PEFT prompt or prefix directory: the table (a prefix as a plain table: an MLP's
   parameters are not in the file) */
static ft_result ft__prompt_table_attach(ft_peft **out, ft_model *m, const char *dir, ft_peft_method method) {
    ft_peft_opts o; ft_safetensors *st; ft_result r; char path[1024]; int64_t P = 0, W = ft__prompt_width(m, method);
    ft_tensor *t;
    float *ours;
    *out = NULL;
    memset(&o, 0, sizeof o);
    o.method = method;
    if ((r = ft__prompt_config(&o, m, dir)) != FT_OK) return r;
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if ((r = ft_safetensors_open(&st, path)) != FT_OK) return r;
    if ((r = ft__prompt_check_file(st, path, &o, W, &P)) == FT_OK) {
        o.n_virtual = (int)P;
        if ((r = ft_peft_attach(out, m, &o)) != FT_OK) r = ft_set_error(r, "%s: %s", path, ft_last_error());
    }
    t = r == FT_OK ? (method == FT_PEFT_PROMPT ? (*out)->prompt : (*out)->pre[0]) : NULL;
    if (t) r = ft__peft_in_tensor(t, st, path, "prompt_embeddings", m, 0, 1);
    if (t && r == FT_OK && method == FT_PEFT_PREFIX) {       /* the keys out of HF's order */
        if (!(ours = FT__CAST(float *, FT_MALLOC((size_t)(P * W) * sizeof(float))))) r = ft_set_error(FT_ERR_NOMEM, "%s: out of memory", path);
        else { ft__prefix_permute(ours, FT__F(t), m, P, 0); memcpy(t->data, ours, (size_t)(P * W) * sizeof(float)); FT_FREE(ours); }
    }
    ft_safetensors_close(st);
    if (r != FT_OK && *out) { ft_peft_free(*out); *out = NULL; }
    return r;
}
static ft_result ft__prompt_attach_peft(ft_peft **out, ft_model *m, const char *dir) { return ft__prompt_table_attach(out, m, dir, FT_PEFT_PROMPT); }
static ft_result ft__prefix_attach_peft(ft_peft **out, ft_model *m, const char *dir) { return ft__prompt_table_attach(out, m, dir, FT_PEFT_PREFIX); }

/* ============================================================================================
   IA3 (Liu et al. 2022): a vector l, initialised to ones, scales k_proj's and v_proj's outputs and
     down_proj's input (PEFT's feed-forward rule): y = (x W^T + b) * l, or (x * l) W^T + b.
   ============================================================================================ */
static ft_result ft__ia3_add(ft_peft *p) {
    ft_model *m = p->m; int64_t l, L = m->c.n_layer; int w; ft_result r;
    if ((r = ft__peft_slots(&p->ia3, L * FT_SITE_COUNT)) != FT_OK) return r;
    for (l = 0; l < L; l++) for (w = 0; w < FT_SITE_COUNT; w++) {
        ft_tensor *W = *ft__site_weight(m, l, w);
        char name[160];
        if (!W || !ft__layer_on(p->po.layer_mask, l) || !(p->po.ia3_targets & (1u << w))) continue;
        snprintf(name, sizeof name, "layers.%d.%s.ia3_l", (int)l, ft_site_name(w));
        if ((r = ft__peft_param(p, &p->ia3[l * FT_SITE_COUNT + w], name, 1, w == FT_SITE_DOWN ? W->shape[1] : W->shape[0], 1)) != FT_OK) return r;
    }
    return FT_OK;
}
static ft_result ft__ia3_init(ft_peft *p, ft_rng *rng) {
    int64_t s, n = p->m->c.n_layer * FT_SITE_COUNT;
    (void)rng;
    for (s = 0; s < n; s++) if (p->ia3[s]) ft__init_const(p->ia3[s], 1.0f);
    return FT_OK;
}
static ft_tensor *ft__ia3_linear(ft_ctx *ctx, ft_peft *p, ft_tensor *x, ft_tensor *W, ft_tensor *bias, int64_t l, int which) {
    ft_tensor *v = l < 0 ? NULL : p->ia3[l * FT_SITE_COUNT + which], *y;
    if (v && which == FT_SITE_DOWN) x = ft_mul(ctx, x, v);
    y = ft__plain_linear(ctx, x, W, bias);
    return v && which != FT_SITE_DOWN ? ft_mul(ctx, y, v) : y;
}

/* ---- PEFT's IA3: ia3_l, [out, 1] for a site that scales its output, [1, in] for down_proj, PEFT's
   one feedforward module (its input scaled); the output vectors of q_proj / k_proj in HF order.
   IA3Config has no layers_to_transform: a subset of layers is a regex over the module names ------ */
static const char *const ft__ia3_part[1] = {"ia3_l"};

static int ft__ia3_layer_on(const ft_peft *p, int64_t l) {
    int w;
    for (w = 0; w < FT_SITE_COUNT; w++) if (p->ia3[l * FT_SITE_COUNT + w]) return 1;
    return 0;
}
/* target_modules: the sites' names, or a regex when some layers have none */
static void ft__ia3_cfg_targets(ft__peft_out *o, const ft_peft *p, unsigned sites) {
    int64_t l;
    int t, all = 1;
    const char *sep = "";
    for (l = 0; l < p->m->c.n_layer; l++) all &= ft__ia3_layer_on(p, l);
    if (all) {
        ft__peft_out_cfg(o, ",\n  \"target_modules\": [");
        for (t = 0; t < FT_SITE_COUNT; t++) if (sites & (1u << t)) { ft__peft_out_cfg(o, "%s\"%s\"", sep, ft_site_name(t)); sep = ", "; }
        ft__peft_out_cfg(o, "]");
        return;
    }
    ft__peft_out_cfg(o, ",\n  \"target_modules\": \".*\\\\.layers\\\\.(");
    for (l = 0; l < p->m->c.n_layer; l++) if (ft__ia3_layer_on(p, l)) { ft__peft_out_cfg(o, "%s%d", sep, (int)l); sep = "|"; }
    ft__peft_out_cfg(o, ")\\\\.(self_attn|mlp)\\\\.(");
    for (sep = "", t = 0; t < FT_SITE_COUNT; t++) if (sites & (1u << t)) { ft__peft_out_cfg(o, "%s%s", sep, ft_site_name(t)); sep = "|"; }
    ft__peft_out_cfg(o, ")\"");
}
static ft_result ft__ia3_save_peft(ft_peft *p, const char *dir, const char *base_model_name) {
    ft__peft_out o;
    int64_t s;
    unsigned sites = 0;
    ft_result r;
    if ((r = ft__peft_out_init(&o, p, "IA3", base_model_name, 0)) != FT_OK) return r;
    for (s = 0; s < p->m->c.n_layer * FT_SITE_COUNT; s++) {
        ft_tensor *v = p->ia3[s];
        int down = s % FT_SITE_COUNT == FT_SITE_DOWN;
        if (!v) continue;
        ft__peft_out_site(&o, p->m, s, ft__ia3_part[0], v, down ? 1 : ft_numel(v), down ? ft_numel(v) : 1, !down);
        sites |= 1u << (s % FT_SITE_COUNT);
    }
    ft__ia3_cfg_targets(&o, p, sites);
    ft__peft_out_cfg(&o, ",\n  \"feedforward_modules\": [%s],\n  \"exclude_modules\": null,\n  \"fan_in_fan_out\": false,\n  \"init_ia3_weights\": true",
                     sites & (1u << FT_SITE_DOWN) ? "\"down_proj\"" : "");
    return ft__peft_out_write(&o, dir);
}

/* every vector of the file into the attached IA3, each of the shape PEFT gives its site */
static ft_result ft__ia3_read(ft_peft *p, ft_safetensors *st, const char *path) {
    int64_t i, filled = 0;
    ft_result r = FT_OK;
    for (i = 0; i < ft_safetensors_count(st) && r == FT_OK; i++) {
        const char *nm = ft_safetensors_name(st, i), *dt;
        long long l = -1;
        int k, w, nd = 0;
        int64_t sh[8];
        ft_tensor *t;
        if (!nm || strcmp(nm, "__metadata__") == 0) continue;
        w = ft__peft_site_key(nm, ft__ia3_part, 1, &l, &k);
        t = p->ia3[l * FT_SITE_COUNT + w];
        ft_safetensors_get(st, nm, &dt, sh, &nd);
        if (nd != 2 || (w == FT_SITE_DOWN ? sh[0] != 1 : sh[1] != 1))
            r = ft_set_error(FT_ERR_UNSUPPORTED, "%s: tensor %s has shape [%lld, %lld]: finetune.h's IA3 scales down_proj's input ([1, in], feedforward_modules) and the other sites' outputs ([out, 1])",
                             path, nm, (long long)sh[0], nd > 1 ? (long long)sh[1] : 0LL);
        else if (!t) r = ft_set_error(FT_ERR_UNSUPPORTED, "%s: tensor %s: finetune.h's IA3 puts the same sites on every layer it adapts, this file does not", path, nm);
        else r = ft__peft_in_tensor(t, st, path, nm, p->m, w == FT_SITE_DOWN ? 0 : ft__site_permuted_heads(p->m, w), 1);
        filled++;
    }
    if (r == FT_OK && filled != ft_params_count(p->P))
        r = ft_set_error(FT_ERR_UNSUPPORTED, "%s: finetune.h's IA3 puts the same sites on every layer it adapts, this file does not", path);
    return r;
}
/* attach a PEFT IA3 directory: sites and layers from the tensors */
static ft_result ft__ia3_attach_peft(ft_peft **out, ft_model *m, const char *dir) {
    ft_json_doc *doc; const ft_json *v; ft_peft_opts o; ft_safetensors *st; ft_result r; char path[1024];
    *out = NULL;
    if ((r = ft__peft_read_config(dir, &doc)) != FT_OK) return r;
    if ((v = ft_json_get(ft_json_root(doc), "fan_in_fan_out")) && v->kind == FT_JSON_BOOL && v->num != 0)
        r = ft_set_error(FT_ERR_UNSUPPORTED, "%s/adapter_config.json: fan_in_fan_out is not supported", dir);
    ft_json_free(doc);
    if (r != FT_OK) return r;
    memset(&o, 0, sizeof o);
    o.method = FT_PEFT_IA3;
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if ((r = ft_safetensors_open(&st, path)) != FT_OK) return r;
    r = ft__peft_scan_attach(out, m, &o, st, path, ft__ia3_part, 1, -1);
    if (r == FT_OK && (r = ft__ia3_read(*out, st, path)) != FT_OK) { ft_peft_free(*out); *out = NULL; }
    ft_safetensors_close(st);
    return r;
}

/* ============================================================================================
   Full fine-tuning: f32 master copies of the weights as parameters; the model's weight headers
     point at them while enabled and at the mapped originals when disabled (the reference). Weights
     matching a .freeze pattern ('*' any run of characters) or outside .layer_mask stay frozen.
   ============================================================================================ */
static int ft__glob(const char *pat, const char *pe, const char *s) {      /* '*' only */
    for (; pat < pe; pat++, s++) {
        if (*pat == '*') { do { if (ft__glob(pat + 1, pe, s)) return 1; } while (*s++); return 0; }
        if (*s != *pat) return 0;
    }
    return *s == 0;
}
static int ft__pattern_match(const char *list, const char *name) {        /* comma-separated */
    while (list && *list) {
        const char *e = strchr(list, ',');
        if (!e) e = list + strlen(list);
        if (e > list && ft__glob(list, e, name)) return 1;
        list = *e ? e + 1 : e;
    }
    return 0;
}
/* point the model's headers at the parameters (on) or the originals (off) */
static void ft__full_install(ft_peft *p, int on) {
    int64_t i;
    if (!p->full) return;
    for (i = 0; i < p->m->n_w; i++) if (p->full[i]) p->m->w[i] = on ? *p->full[i] : p->full_orig[i];
}
static ft_result ft__full_add(ft_peft *p) {
    ft_model *m = p->m; int64_t i; ft_result r;
    if ((r = ft__peft_slots(&p->full, m->n_w)) != FT_OK) return r;
    p->full_orig = FT__CAST(ft_tensor *, FT_MALLOC((size_t)FT__MAX(m->n_w, 1) * sizeof(ft_tensor)));
    if (!p->full_orig) return ft_set_error(FT_ERR_NOMEM, "peft: out of memory");
    for (i = 0; i < m->n_w; i++) {
        const char *nm = m->w[i].name; int lay = -1;
        p->full_orig[i] = m->w[i];
        if (!nm || ft__pattern_match(p->po.freeze, nm) || !ft__weight_decodable(&m->w[i], m->w[i].shape[m->w[i].ndim - 1])) continue;
        if (sscanf(nm, "blk.%d.", &lay) == 1 && !ft__layer_on(p->po.layer_mask, lay)) continue;
        if (!(p->full[i] = ft_params_add(p->P, nm, m->w[i].ndim, m->w[i].shape))) return ft_set_error(FT_ERR_NOMEM, "peft: out of memory");
    }
    p->po.freeze = NULL;                              /* the caller's string: not kept */
    return FT_OK;
}
static ft_result ft__full_init(ft_peft *p, ft_rng *rng) {
    ft_model *m = p->m; int64_t i, rr;
    (void)rng;
    for (i = 0; i < m->n_w; i++) if (p->full[i]) {
        ft_tensor *t = p->full[i]; int64_t in = t->shape[t->ndim - 1], rows = ft_numel(t) / in;
        for (rr = 0; rr < rows; rr++) ft__weight_row(&m->w[i], rr, 0, in, FT__F(t) + rr * in);   /* any storage: f32 master copy */
    }
    ft__full_install(p, 1);
    return FT_OK;
}
static ft_result ft__full_bake(ft_peft *p) {
    ft_model *m = p->m;
    if (!p->enabled) ft_peft_set_enabled(p, 1);
    m->baked_params[m->n_baked_params++] = p->P;                /* the headers point into it */
    FT_FREE(p->full);
    p->full = NULL;
    p->P = NULL;
    return FT_OK;
}
static void ft__full_detach(ft_peft *p) { ft__full_install(p, 0); }

/* ============================================================================================
   Your own method (ft_peft_attach_custom): its row forwards to the hooks it brings.
   ============================================================================================ */
static ft_result ft__custom_add(ft_peft *p) {
    if (!p->custom->add) return ft_set_error(FT_ERR_INVALID, "peft %s: no add hook", p->custom->name ? p->custom->name : "?");
    return p->custom->add(p, p->P, p->custom->user);
}
static ft_result ft__custom_init(ft_peft *p, ft_rng *rng) {
    return p->custom->init ? p->custom->init(p, rng, p->custom->user) : FT_OK;
}
static ft_tensor *ft__custom_linear(ft_ctx *ctx, ft_peft *p, ft_tensor *x, ft_tensor *W, ft_tensor *bias, int64_t l, int which) {
    if (!p->custom->linear) return ft__plain_linear(ctx, x, W, bias);
    return p->custom->linear(ctx, p, x, W, bias, (int)l, which, p->custom->user);
}
static ft_tensor *ft__custom_after(ft_ctx *ctx, ft_peft *p, int64_t l, int place, ft_tensor *y) {
    return p->custom->after ? p->custom->after(ctx, p, (int)l, place, y, p->custom->user) : y;
}

/* ============================================================================================
   The methods, one row each (in ft_peft_method's order), and what every method shares: attach,
   the switch to the base model, bake, free, and the hooks the model's forward calls.
   ============================================================================================ */
static const ft__peft_impl ft__peft_impls[] = {
    {FT_PEFT_LORA, ft__lora_add, ft__lora_init, ft__lora_linear, NULL, ft__lora_embed, NULL, NULL,
     ft__lora_delta, ft__lora_merge_row, NULL, ft__merge_bake, ft__merge_detach, "LORA", ft__lora_save_peft, ft__lora_attach_peft,
     ft__lora_expert},
    {FT_PEFT_ADAPTER, ft__adapter_add, ft__adapter_init, NULL, ft__adapter_after, NULL, NULL, NULL,
     NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    {FT_PEFT_PREFIX, ft__prefix_add, ft__prefix_init, NULL, NULL, NULL, ft__prefix_table, NULL,
     NULL, NULL, NULL, NULL, NULL, "PREFIX_TUNING", ft__prefix_save_peft, ft__prefix_attach_peft, NULL},
    {FT_PEFT_PROMPT, ft__prompt_add, ft__prompt_init, NULL, NULL, NULL, NULL, ft__prompt_table,
     NULL, NULL, NULL, NULL, NULL, "PROMPT_TUNING", ft__prompt_save_peft, ft__prompt_attach_peft, NULL},
    {FT_PEFT_IA3, ft__ia3_add, ft__ia3_init, ft__ia3_linear, NULL, NULL, NULL, NULL,
     NULL, NULL, NULL, NULL, NULL, "IA3", ft__ia3_save_peft, ft__ia3_attach_peft, NULL},
    {FT_PEFT_FULL, ft__full_add, ft__full_init, NULL, NULL, NULL, NULL, NULL,
     NULL, NULL, ft__full_install, ft__full_bake, ft__full_detach, NULL, NULL, NULL, NULL},
    {FT_PEFT_LOHA, ft__loha_add, ft__loha_init, ft__loha_linear, NULL, NULL, NULL, NULL,
     ft__loha_delta, ft__loha_merge_row, NULL, ft__merge_bake, ft__merge_detach, "LOHA", ft__loha_save_peft, ft__loha_attach_peft, NULL},
    {FT_PEFT_CUSTOM, ft__custom_add, ft__custom_init, ft__custom_linear, ft__custom_after, NULL, NULL, NULL,
     NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL},
};
typedef char ft__peft_impls_fit_the_enum[sizeof ft__peft_impls / sizeof ft__peft_impls[0] == FT_PEFT_COUNT ? 1 : -1];
static const ft__peft_impl *ft__peft_impl_of(ft_peft_method k) {
    return (int)k >= 0 && k < FT_PEFT_COUNT ? &ft__peft_impls[k] : NULL;
}

FT_API ft_peft_opts ft_peft_opts_default(ft_peft_method method) {
    ft_peft_opts o;
    memset(&o, 0, sizeof o);
    o.method = method;
    o.lora = ft_lora_opts_default();
    o.bottleneck = 64;
    o.placement = FT_ADAPTER_HOULSBY;
    o.act = FT_ACT_RELU;
    o.n_virtual = 20;
    o.prompt_init = FT_PROMPT_RANDOM;
    o.ia3_targets = FT_TARGET_K | FT_TARGET_V | FT_TARGET_DOWN;
    return o;
}

/* the options with every zero field at its default; LoRA's live in .lora (and p->o) */
static void ft__peft_fill(ft_peft *p, const ft_peft_opts *opts) {
    ft_peft_opts d = ft_peft_opts_default(opts->method);
    p->po = *opts;
    if (p->po.lora.r <= 0) p->po.lora.r = d.lora.r;
    if (p->po.lora.alpha <= 0) p->po.lora.alpha = (float)p->po.lora.r;       /* PEFT: alpha = r unless given */
    if (!p->po.lora.targets) p->po.lora.targets = d.lora.targets;
    if (!p->po.lora.layer_mask) p->po.lora.layer_mask = opts->layer_mask;
    if (!p->po.layer_mask) p->po.layer_mask = p->po.lora.layer_mask;
    if (!p->po.lora.seed) p->po.lora.seed = opts->seed;
    if (p->po.lora.reward_head) p->po.reward_head = 1;
    if (p->po.bottleneck <= 0) p->po.bottleneck = d.bottleneck;
    if (p->po.n_virtual <= 0) p->po.n_virtual = d.n_virtual;
    if (!p->po.ia3_targets) p->po.ia3_targets = d.ia3_targets;
    p->o = p->po.lora;
    p->o.reward_head = p->po.reward_head;
}

static ft_result ft__peft_attach(ft_peft **out, ft_model *m, const ft_peft_opts *opts, const ft_peft_method_def *custom) {
    const ft__peft_impl *impl = ft__peft_impl_of(opts->method);
    ft_peft *p; ft_result r; ft_rng rng;
    *out = NULL;
    if (m->peft) return ft_set_error(FT_ERR_STATE, "peft: the model already has a method attached");
    if (!impl) return ft_set_error(FT_ERR_INVALID, "peft: unknown method %d", (int)opts->method);
    if ((opts->method == FT_PEFT_CUSTOM) != (custom != NULL)) return ft_set_error(FT_ERR_INVALID, "peft: a custom method attaches with ft_peft_attach_custom");
    p = FT__CAST(ft_peft *, FT_MALLOC(sizeof *p));
    if (!p) return ft_set_error(FT_ERR_NOMEM, "peft: out of memory");
    memset(p, 0, sizeof *p);
    p->m = m; p->impl = impl; p->kind = opts->method; p->enabled = 1; p->custom = custom;
    ft__peft_fill(p, opts);
    if ((r = ft_params_init(&p->P)) == FT_OK) r = impl->add(p);
    if (r == FT_OK && p->po.reward_head) r = ft__peft_param(p, &p->score, "score.weight", 2, 1, m->c.n_embd);
    if (r == FT_OK && ft_params_count(p->P) == 0)
        r = ft_set_error(FT_ERR_INVALID, "peft: %s has nothing to train (layers, targets or freeze patterns exclude everything)", ft_peft_method_name(p->kind));
    if (r == FT_OK) r = ft_params_alloc(p->P);
    ft_rng_seed(&rng, p->o.seed ? p->o.seed : 0x10ea);
    if (r == FT_OK) r = impl->init(p, &rng);
    if (r != FT_OK) { ft_peft_free(p); return r; }
    if (p->score) ft__init_normal(p->score, 0.02f, &rng);     /* as transformers: N(0, 0.02) */
    p->o.layer_mask = NULL;                           /* the caller's arrays: not kept */
    p->po.layer_mask = NULL;
    p->po.lora.layer_mask = NULL;
    p->po.prompt_text = NULL;
    m->peft = p;
    *out = p;
    return FT_OK;
}
FT_API ft_result ft_peft_attach(ft_peft **out, ft_model *m, const ft_peft_opts *opts) {
    return ft__peft_attach(out, m, opts, NULL);
}
FT_API ft_result ft_peft_attach_custom(ft_peft **out, ft_model *m, const ft_peft_method_def *def, uint64_t seed) {
    ft_peft_opts o = ft_peft_opts_default(FT_PEFT_CUSTOM);
    o.seed = seed;
    return ft__peft_attach(out, m, &o, def);
}
FT_API ft_model *ft_peft_model(ft_peft *p) { return p->m; }
FT_API ft_result ft_lora_attach(ft_peft **out, ft_model *m, const ft_lora_opts *opts) {
    ft_peft_opts o = ft_peft_opts_default(FT_PEFT_LORA);
    o.lora = *opts;
    return ft_peft_attach(out, m, &o);
}

/* undo what the method did to the model and forget it (ft_peft_free, ft_model_free) */
static void ft__peft_detach(ft_peft *p) {
    if (!p->m) return;
    if (p->impl->detach) p->impl->detach(p);
    if (p->m->peft == p) p->m->peft = NULL;
    p->m = NULL;
}
FT_API void ft_peft_free(ft_peft *p) {
    if (!p) return;
    ft__peft_detach(p);
    ft_params_free(p->P);
    FT_FREE(p->A); FT_FREE(p->ad); FT_FREE(p->ia3); FT_FREE(p->full); FT_FREE(p->full_orig); FT_FREE(p->hada); FT_FREE(p->expA); FT_FREE(p->router);
    FT_FREE(p);
}
FT_API ft_result ft_peft_bake(ft_peft *p) {
    ft_model *m = p->m; ft_result r;
    if (!m) return ft_set_error(FT_ERR_STATE, "bake: the model was freed");
    if (m->n_baked == 8 || m->n_baked_params == 8) return ft_set_error(FT_ERR_STATE, "bake: at most 8 adapters can be baked into one model");
    if (!p->impl->bake) return ft_set_error(FT_ERR_UNSUPPORTED, "bake: a %s method has no weights to fold in", ft_peft_method_name(p->kind));
    if ((r = p->impl->bake(p)) != FT_OK) return r;
    ft_peft_free(p);
    return FT_OK;
}
FT_API ft_params *ft_peft_params(ft_peft *p) { return p->P; }
FT_API void ft_peft_set_enabled(ft_peft *p, int on) {
    if (p->impl->enable && p->m && (on != 0) != p->enabled) p->impl->enable(p, on != 0);
    p->enabled = on != 0;
}
FT_API int ft_peft_enabled(const ft_peft *p) { return p->enabled; }
FT_API float ft_lora_scale(const ft_peft *p) { return p->scale; }
FT_API const ft_lora_opts *ft_lora_options(const ft_peft *p) { return &p->o; }
FT_API ft_tensor *ft_lora_A(ft_peft *p, int layer, int which) { return p->A ? p->A[(int64_t)layer * FT_SITE_COUNT + which] : NULL; }
FT_API ft_tensor *ft_lora_B(ft_peft *p, int layer, int which) { return p->A ? p->B[(int64_t)layer * FT_SITE_COUNT + which] : NULL; }
FT_API ft_tensor *ft_lora_magnitude(ft_peft *p, int layer, int which) { return p->A ? p->mag[(int64_t)layer * FT_SITE_COUNT + which] : NULL; }
FT_API ft_peft_method ft_peft_kind(const ft_peft *p) { return p->kind; }
FT_API const char *ft_peft_method_name(ft_peft_method k) {
    const char *n = ft_enum_name(FT_ENUM_PEFT_METHOD, (int)k);
    return n ? n : "?";
}
FT_API int64_t ft_peft_virtual_tokens(const ft_peft *p) {
    return p && (p->impl->prefix || p->impl->prompt) ? p->po.n_virtual : 0;
}

/* ---- the hooks the model's forward calls (no method, or switched off: the base model) ---------------- */
static int ft__peft_on(const ft_peft *p) { return p && p->enabled; }
/* layer l has a site with a weight delta (LoRA, LoHa) */
static int ft__layer_has_site(const ft_peft *p, int64_t l) {
    int w;
    for (w = 0; w < FT_SITE_COUNT; w++) if (p->impl->delta && p->impl->delta(p, l * FT_SITE_COUNT + w)) return 1;
    return 0;
}
static ft_tensor *ft__peft_linear(ft_ctx *ctx, ft_peft *p, ft_tensor *x, ft_tensor *W, ft_tensor *bias, int64_t l, int which) {
    if (!ft__peft_on(p) || !p->impl->linear) return ft__plain_linear(ctx, x, W, bias);
    return p->impl->linear(ctx, p, x, W, bias, l, which);
}
/* does the head compute plain x W^T with the model's own W? (the built-in methods that leave it:
   all but LoRA on the head and full fine-tuning; a method of your own is not assumed to) */
static int ft__peft_head_plain(const ft_peft *p) {
    if (!ft__peft_on(p) || !p->impl->linear) return 1;
    return (p->kind == FT_PEFT_LORA || p->kind == FT_PEFT_LOHA || p->kind == FT_PEFT_IA3 || p->kind == FT_PEFT_ADAPTER ||
            p->kind == FT_PEFT_PREFIX || p->kind == FT_PEFT_PROMPT) && !p->head_A;
}
/* layer l's router: the attached method's trained copy, or the model's */
static ft_tensor *ft__peft_router(ft_model *m, int64_t l) {
    ft_peft *p = m->peft;
    return ft__peft_on(p) && p->router && p->router[l] ? p->router[l] : m->layers[l].router;
}
static ft_tensor *ft__peft_expert(ft_ctx *ctx, ft_peft *p, ft_tensor *x, ft_tensor *W, int64_t l, int64_t e, int k) {
    return ft__peft_on(p) && p->impl->expert ? p->impl->expert(ctx, p, x, W, l, e, k) : ft_matmul(ctx, x, W, 0, 1);
}
static ft_tensor *ft__peft_after(ft_ctx *ctx, ft_model *m, int64_t l, int place, ft_tensor *y) {
    ft_peft *p = m->peft;
    return ft__peft_on(p) && p->impl->after && y ? p->impl->after(ctx, p, l, place, y) : y;
}
static ft_tensor *ft__peft_embed(ft_ctx *ctx, ft_model *m, const int32_t *ids, int64_t n) {
    ft_tensor *e = ft_embedding(ctx, m->tok_embd, ids, n);
    ft_peft *p = m->peft;
    return ft__peft_on(p) && p->impl->embed && e ? p->impl->embed(ctx, p, e, ids, n) : e;
}
/* virtual tokens of a prefix (prefix: 1) or a soft prompt (0); only_enabled 0: even when off */
static int64_t ft__peft_tokens(const ft_peft *p, int prefix, int only_enabled) {
    if (!p || (only_enabled && !p->enabled)) return 0;
    return (prefix ? p->impl->prefix != NULL : p->impl->prompt != NULL) ? p->po.n_virtual : 0;
}
static ft_tensor *ft__peft_prefix(ft_ctx *ctx, ft_peft *p) { return p->impl->prefix(ctx, p); }
static ft_tensor *ft__peft_prompt(ft_ctx *ctx, ft_peft *p) { return p->impl->prompt(ctx, p); }


/* ============================================================================================
   [data] strict JSON (RFC 8259) for JSONL datasets: UTF-8 validated, escapes decoded,
   depth-limited; every error names the file, the line and the column.
   A parsed document is one block of nodes plus one block of decoded strings.
   ============================================================================================ */
struct ft_json_doc { ft_json *nodes; int64_t n_nodes, cap_nodes; char *strs; size_t n_strs, cap_strs; ft_json *root; };

typedef struct ft__jp {
    const unsigned char *p, *end, *line_start;
    const char *file; int64_t line;
    ft_json_doc *d; ft_result err; int depth;
} ft__jp;

static int ft__jfail(ft__jp *j, const char *what) {
    if (j->err == FT_OK)
        j->err = ft_set_error(FT_ERR_FORMAT, "%s:%lld:%lld: %s", j->file, (long long)j->line, (long long)(j->p - j->line_start + 1), what);
    return 0;
}
static void ft__jws(ft__jp *j) { while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\r' || *j->p == '\n')) j->p++; }

/* length of the valid UTF-8 sequence at p (1..4), 0 if invalid (overlong, surrogate, > U+10FFFF) */
FT_API int ft_utf8_len(const unsigned char *p, const unsigned char *end) {
    unsigned c = p[0];
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) return end - p >= 2 && (p[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        if (end - p < 3 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80) return 0;
        if ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] >= 0xa0)) return 0;   /* overlong / surrogate */
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (end - p < 4 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 || (p[3] & 0xc0) != 0x80) return 0;
        if ((c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] >= 0x90)) return 0;
        return 4;
    }
    return 0;
}

static size_t ft__jstr_put(ft__jp *j, const void *src, size_t n) {   /* append to the string pool */
    ft_json_doc *d = j->d;
    if (d->n_strs + n + 1 > d->cap_strs) {
        size_t nc = FT__MAX(d->cap_strs * 2, d->n_strs + n + 256);
        char *ns = FT__CAST(char *, FT_REALLOC(d->strs, nc));
        if (!ns) { j->err = ft_set_error(FT_ERR_NOMEM, "%s:%lld: out of memory", j->file, (long long)j->line); return 0; }
        d->strs = ns; d->cap_strs = nc;
    }
    memcpy(d->strs + d->n_strs, src, n);
    d->n_strs += n;
    return n;
}

static int64_t ft__jnode(ft__jp *j) {                     /* index of a fresh node */
    ft_json_doc *d = j->d;
    if (d->n_nodes == d->cap_nodes) {
        int64_t nc = d->cap_nodes ? 2 * d->cap_nodes : 64;
        ft_json *nn = FT__CAST(ft_json *, FT_REALLOC(d->nodes, (size_t)nc * sizeof(ft_json)));
        if (!nn) { j->err = ft_set_error(FT_ERR_NOMEM, "%s:%lld: out of memory", j->file, (long long)j->line); return -1; }
        d->nodes = nn; d->cap_nodes = nc;
    }
    memset(&d->nodes[d->n_nodes], 0, sizeof(ft_json));
    return d->n_nodes++;
}

/* a string token into the pool; node->s is fixed up after parsing (the pool may move) */
static int ft__jstring(ft__jp *j, int64_t node) {
    size_t start = j->d->n_strs;
    j->p++;                                                   /* opening quote */
    for (;;) {
        const unsigned char *run = j->p;
        while (j->p < j->end && *j->p != '"' && *j->p != '\\' && *j->p >= 0x20 && *j->p < 0x80) j->p++;
        if (j->p > run) ft__jstr_put(j, run, (size_t)(j->p - run));
        if (j->p >= j->end) return ft__jfail(j, "unterminated string");
        if (*j->p == '"') { j->p++; break; }
        if (*j->p < 0x20) return ft__jfail(j, "control character in a string (escape it)");
        if (*j->p >= 0x80) {
            int k = ft_utf8_len(j->p, j->end);
            if (!k) return ft__jfail(j, "invalid UTF-8 in a string");
            ft__jstr_put(j, j->p, (size_t)k); j->p += k;
            continue;
        }
        /* escape */
        if (j->end - j->p < 2) return ft__jfail(j, "unterminated escape");
        j->p++;
        switch (*j->p) {
        case '"': case '\\': case '/': ft__jstr_put(j, j->p, 1); j->p++; break;
        case 'b': ft__jstr_put(j, "\b", 1); j->p++; break;
        case 'f': ft__jstr_put(j, "\f", 1); j->p++; break;
        case 'n': ft__jstr_put(j, "\n", 1); j->p++; break;
        case 'r': ft__jstr_put(j, "\r", 1); j->p++; break;
        case 't': ft__jstr_put(j, "\t", 1); j->p++; break;
        case 'u': {
            unsigned cp = 0, k; unsigned char u[4]; int nu;
            for (;;) {
                unsigned v = 0;
                if (j->end - j->p < 5) return ft__jfail(j, "short \\u escape");
                for (k = 1; k <= 4; k++) {
                    unsigned ch = j->p[k];
                    unsigned d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : 16;
                    if (d > 15) return ft__jfail(j, "bad hex digit in \\u escape");
                    v = v * 16 + d;
                }
                j->p += 5;
                if (cp) {                                     /* second half of a pair */
                    if (v < 0xdc00 || v > 0xdfff) return ft__jfail(j, "unpaired surrogate in \\u escape");
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (v - 0xdc00);
                    break;
                }
                if (v >= 0xd800 && v <= 0xdbff) {
                    cp = v;
                    if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u') return ft__jfail(j, "unpaired surrogate in \\u escape");
                    j->p++;
                    continue;
                }
                if (v >= 0xdc00 && v <= 0xdfff) return ft__jfail(j, "unpaired surrogate in \\u escape");
                cp = v;
                break;
            }
            if (cp < 0x80) { u[0] = (unsigned char)cp; nu = 1; }
            else if (cp < 0x800) { u[0] = (unsigned char)(0xc0 | cp >> 6); u[1] = (unsigned char)(0x80 | (cp & 63)); nu = 2; }
            else if (cp < 0x10000) { u[0] = (unsigned char)(0xe0 | cp >> 12); u[1] = (unsigned char)(0x80 | (cp >> 6 & 63)); u[2] = (unsigned char)(0x80 | (cp & 63)); nu = 3; }
            else { u[0] = (unsigned char)(0xf0 | cp >> 18); u[1] = (unsigned char)(0x80 | (cp >> 12 & 63)); u[2] = (unsigned char)(0x80 | (cp >> 6 & 63)); u[3] = (unsigned char)(0x80 | (cp & 63)); nu = 4; }
            ft__jstr_put(j, u, (size_t)nu);
            break; }
        default: return ft__jfail(j, "unknown escape");
        }
        if (j->err != FT_OK) return 0;
    }
    ft__jstr_put(j, "", 1);                                   /* NUL */
    if (node >= 0) {
        j->d->nodes[node].kind = FT_JSON_STRING;
        j->d->nodes[node].len = (int64_t)(j->d->n_strs - start - 1);
        j->d->nodes[node].s = (const char *)(uintptr_t)start;  /* an offset until fix-up */
    }
    return j->err == FT_OK;
}

static int ft__jvalue(ft__jp *j, int64_t node);

/* arrays and objects: children are parsed into a temporary list, then copied contiguously */
static int ft__jcontainer(ft__jp *j, int64_t node, int object) {
    int64_t *tmp = NULL, n = 0, cap = 0, i;
    if (++j->depth > 64) return ft__jfail(j, "nesting deeper than 64 levels");
    j->p++;
    ft__jws(j);
    if (j->p < j->end && *j->p == (object ? '}' : ']')) j->p++;
    else for (;;) {
        int64_t k = -1, v;
        ft__jws(j);
        if (object) {
            if (j->p >= j->end || *j->p != '"') { FT_FREE(tmp); return ft__jfail(j, "expected a \"key\""); }
            if ((k = ft__jnode(j)) < 0 || !ft__jstring(j, k)) { FT_FREE(tmp); return 0; }
            ft__jws(j);
            if (j->p >= j->end || *j->p != ':') { FT_FREE(tmp); return ft__jfail(j, "expected ':' after a key"); }
            j->p++;
        }
        if ((v = ft__jnode(j)) < 0 || !ft__jvalue(j, v)) { FT_FREE(tmp); return 0; }
        if (n + 2 > cap) {
            int64_t *nt; cap = cap ? 2 * cap : 16;
            nt = FT__CAST(int64_t *, FT_REALLOC(tmp, (size_t)cap * sizeof(int64_t)));
            if (!nt) { FT_FREE(tmp); return ft__jfail(j, "out of memory"); }
            tmp = nt;
        }
        if (object) tmp[n++] = k;
        tmp[n++] = v;
        ft__jws(j);
        if (j->p < j->end && *j->p == ',') { j->p++; continue; }
        if (j->p < j->end && *j->p == (object ? '}' : ']')) { j->p++; break; }
        FT_FREE(tmp);
        return ft__jfail(j, object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
    {   /* children, contiguous: copy them to fresh nodes at the end */
        int64_t first = j->d->n_nodes;
        for (i = 0; i < n; i++) if (ft__jnode(j) < 0) { FT_FREE(tmp); return 0; }
        for (i = 0; i < n; i++) j->d->nodes[first + i] = j->d->nodes[tmp[i]];
        j->d->nodes[node].kind = object ? FT_JSON_OBJECT : FT_JSON_ARRAY;
        j->d->nodes[node].n = object ? n / 2 : n;
        j->d->nodes[node].kid = (ft_json *)(uintptr_t)first;  /* an index until fix-up */
    }
    FT_FREE(tmp);
    j->depth--;
    return 1;
}

static int ft__jvalue(ft__jp *j, int64_t node) {
    ft_json *x;
    ft__jws(j);
    if (j->p >= j->end) return ft__jfail(j, "unexpected end of the line");
    switch (*j->p) {
    case '{': return ft__jcontainer(j, node, 1);
    case '[': return ft__jcontainer(j, node, 0);
    case '"': return ft__jstring(j, node);
    case 't': case 'f': case 'n': {
        static const char *words[3] = {"true", "false", "null"};
        int w = *j->p == 't' ? 0 : *j->p == 'f' ? 1 : 2; size_t l = strlen(words[w]);
        if ((size_t)(j->end - j->p) < l || memcmp(j->p, words[w], l) != 0) return ft__jfail(j, "invalid literal");
        j->p += l;
        x = &j->d->nodes[node];
        x->kind = w == 2 ? FT_JSON_NULL : FT_JSON_BOOL; x->num = w == 0;
        return 1; }
    default: {                                                /* a number, strictly as RFC 8259 */
        const unsigned char *s = j->p; char buf[64];
        if (*j->p == '-') j->p++;
        if (j->p < j->end && *j->p == '0') j->p++;
        else if (j->p < j->end && *j->p >= '1' && *j->p <= '9') while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
        else { j->p = s; return ft__jfail(j, "unexpected character"); }
        if (j->p < j->end && *j->p == '.') {
            j->p++;
            if (j->p >= j->end || *j->p < '0' || *j->p > '9') return ft__jfail(j, "digits expected after '.'");
            while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
        }
        if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
            j->p++;
            if (j->p < j->end && (*j->p == '+' || *j->p == '-')) j->p++;
            if (j->p >= j->end || *j->p < '0' || *j->p > '9') return ft__jfail(j, "digits expected in the exponent");
            while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
        }
        if (j->p - s >= (long)sizeof buf) return ft__jfail(j, "number too long");
        memcpy(buf, s, (size_t)(j->p - s)); buf[j->p - s] = 0;
        x = &j->d->nodes[node];
        x->kind = FT_JSON_NUMBER; x->num = strtod(buf, NULL);
        if (!(fabs(x->num) <= DBL_MAX)) return ft__jfail(j, "number out of range (not a finite double)");
        return 1; }
    }
}

FT_API void ft_json_free(ft_json_doc *d) {
    if (!d) return;
    FT_FREE(d->nodes); FT_FREE(d->strs); FT_FREE(d);
}

/* parse one JSON text (a JSONL line); file and line are for messages */
FT_API ft_result ft_json_parse(ft_json_doc **out, const char *text, size_t len, const char *file, int64_t line) {
    ft__jp j; ft_json_doc *d; int64_t root, i;
    *out = NULL;
    d = FT__CAST(ft_json_doc *, FT_MALLOC(sizeof *d));
    if (!d) return ft_set_error(FT_ERR_NOMEM, "%s:%lld: out of memory", file, (long long)line);
    memset(d, 0, sizeof *d);
    memset(&j, 0, sizeof j);
    j.p = j.line_start = FT__CAST(const unsigned char *, text); j.end = j.p + len; j.file = file; j.line = line; j.d = d;
    root = ft__jnode(&j);
    if (root >= 0 && ft__jvalue(&j, root)) {
        ft__jws(&j);
        if (j.p < j.end) ft__jfail(&j, "unexpected text after the value");
    }
    if (j.err != FT_OK) { ft_json_free(d); return j.err; }
    for (i = 0; i < d->n_nodes; i++) {                        /* offsets -> pointers */
        ft_json *x = &d->nodes[i];
        if (x->kind == FT_JSON_STRING) x->s = d->strs + (size_t)(uintptr_t)x->s;
        if (x->kind == FT_JSON_ARRAY || x->kind == FT_JSON_OBJECT) x->kid = d->nodes + (int64_t)(uintptr_t)x->kid;
    }
    d->root = &d->nodes[root];
    *out = d;
    return FT_OK;
}
FT_API const ft_json *ft_json_root(const ft_json_doc *d) { return d->root; }
FT_API const ft_json *ft_json_get(const ft_json *obj, const char *key) {
    int64_t i; size_t n = strlen(key);
    if (!obj || obj->kind != FT_JSON_OBJECT) return NULL;
    for (i = obj->n - 1; i >= 0; i--)                         /* the last duplicate wins */
        if ((size_t)obj->kid[2 * i].len == n && memcmp(obj->kid[2 * i].s, key, n) == 0) return &obj->kid[2 * i + 1];
    return NULL;
}
FT_API const ft_json *ft_json_at(const ft_json *arr, int64_t i) {
    return arr && arr->kind == FT_JSON_ARRAY && i >= 0 && i < arr->n ? &arr->kid[i] : NULL;
}
FT_API const ft_json *ft_json_key_at(const ft_json *obj, int64_t i) {
    return obj && obj->kind == FT_JSON_OBJECT && i >= 0 && i < obj->n ? &obj->kid[2 * i] : NULL;
}
FT_API const ft_json *ft_json_value_at(const ft_json *obj, int64_t i) {
    return obj && obj->kind == FT_JSON_OBJECT && i >= 0 && i < obj->n ? &obj->kid[2 * i + 1] : NULL;
}

/* ---- JSONL files: one JSON value per line; blank lines are skipped ------------------------------- */
struct ft_jsonl { char *path; unsigned char *buf; size_t size, pos; int64_t line; };

FT_API ft_result ft_jsonl_open(ft_jsonl **out, const char *path) {
    ft_jsonl *f; FILE *fp; long n;
    *out = NULL;
    fp = fopen(path, "rb");
    if (!fp) return ft_set_error(FT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    f = FT__CAST(ft_jsonl *, FT_MALLOC(sizeof *f));
    if (!f) { fclose(fp); return ft_set_error(FT_ERR_NOMEM, "%s: out of memory", path); }
    memset(f, 0, sizeof *f);
    if (fseek(fp, 0, SEEK_END) != 0 || (n = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) != 0) { fclose(fp); FT_FREE(f); return ft_set_error(FT_ERR_IO, "%s: cannot seek", path); }
    f->size = (size_t)n;
    f->buf = FT__CAST(unsigned char *, FT_MALLOC(f->size + 1));
    f->path = ft__strndup(path, strlen(path));
    if (!f->buf || !f->path || fread(f->buf, 1, f->size, fp) != f->size) {
        fclose(fp); FT_FREE(f->buf); FT_FREE(f->path); FT_FREE(f);
        return ft_set_error(FT_ERR_IO, "%s: read failed", path);
    }
    fclose(fp);
    *out = f;
    return FT_OK;
}
FT_API void ft_jsonl_close(ft_jsonl *f) { if (f) { FT_FREE(f->buf); FT_FREE(f->path); FT_FREE(f); } }
FT_API int64_t ft_jsonl_line(const ft_jsonl *f) { return f->line; }
FT_API const char *ft_jsonl_path(const ft_jsonl *f) { return f->path; }
/* the next non-blank line, parsed: FT_OK with *doc, FT_OK with *doc == NULL at the end, or an
   error naming file:line:column (the reader moves past the bad line, so a caller may skip it) */
FT_API ft_result ft_jsonl_next(ft_jsonl *f, ft_json_doc **doc) {
    *doc = NULL;
    while (f->pos < f->size) {
        size_t s = f->pos, e = s, k;
        while (e < f->size && f->buf[e] != '\n') e++;
        f->pos = e + 1; f->line++;
        for (k = s; k < e && (f->buf[k] == ' ' || f->buf[k] == '\t' || f->buf[k] == '\r'); k++) {}
        if (k == e) continue;
        return ft_json_parse(doc, FT__CAST(const char *, f->buf + s), e - s, f->path, f->line);
    }
    return FT_OK;
}

/* ============================================================================================
   [dataset] JSONL examples -> token ids with a loss mask
   Formats (one JSON object a line):
     text        {"text"}                                   continued pretraining, loss on all
     instruct    {"instruction", "input"?, "output"}        rendered as a user / assistant chat
     chat        {"messages": [{"role", "content"}, ...]}   loss on the assistant turns
     preference  {"prompt", "chosen", "rejected"}           prompt as text or as messages
     kto         {"prompt", "completion", "label"}
     prompt      {"prompt", "answer"?}                      prompts for RL and generation evals
   Chat rendering goes through the model's chat template, one message at a time: the text a
   message adds is split into its header (no loss) and its content with the end-of-turn marker
   (loss, for assistant messages). Pieces are cut at special tokens or line breaks, where the
   tokenizer splits anyway, so the ids equal those of tokenizing the whole conversation.
   ============================================================================================ */

typedef struct ft__buf { int32_t *ids; unsigned char *loss; int64_t n, cap; } ft__buf;

static ft_result ft__buf_push(ft__buf *b, const ft_tokenizer *tok, const char *text, int64_t len, int loss, int add_bos) {
    int64_t n = ft_tokenize(tok, text, len, NULL, 0, add_bos, 1), i;
    if (n < 0) return (ft_result)n;
    if (b->n + n > b->cap) {
        int64_t nc = FT__MAX(2 * b->cap, b->n + n + 64);
        int32_t *ni = FT__CAST(int32_t *, FT_REALLOC(b->ids, (size_t)nc * sizeof(int32_t)));
        unsigned char *nl;
        if (!ni) return ft_set_error(FT_ERR_NOMEM, "dataset: out of memory");
        b->ids = ni;
        nl = FT__CAST(unsigned char *, FT_REALLOC(b->loss, (size_t)nc));
        if (!nl) return ft_set_error(FT_ERR_NOMEM, "dataset: out of memory");
        b->loss = nl; b->cap = nc;
    }
    ft_tokenize(tok, text, len, b->ids + b->n, n, add_bos, 1);
    for (i = 0; i < n; i++) b->loss[b->n + i] = (unsigned char)loss;
    b->n += n;
    return FT_OK;
}

/* render msgs[0..n) through the template and tokenize with loss on assistant contents */
static ft_result ft__render_chat(ft__buf *b, const ft_tokenizer *tok, const char *tmpl, const ft_chat_msg *msgs, int n,
                                 int train_on_prompt, int add_gen_prompt, const char *where) {
    int64_t prev = 0, len; int i; ft_result r;
    char *buf = NULL; int64_t cap = 0;
    for (i = 0; i <= n; i++) {
        int gen = i == n;                          /* the last round adds the generation prompt */
        if (gen && !add_gen_prompt) break;
        len = ft_chat_apply(tmpl, msgs, gen ? n : i + 1, gen, NULL, 0);
        if (len < 0) { FT_FREE(buf); return ft_set_error((ft_result)len, "%s: chat template: %s", where, ft_last_error()); }
        if (len + 1 > cap) {
            char *nb = FT__CAST(char *, FT_REALLOC(buf, (size_t)len + 1));
            if (!nb) { FT_FREE(buf); return ft_set_error(FT_ERR_NOMEM, "dataset: out of memory"); }
            buf = nb; cap = len + 1;
        }
        ft_chat_apply(tmpl, msgs, gen ? n : i + 1, gen, buf, cap);
        if (len < prev) { FT_FREE(buf); return ft_set_error(FT_ERR_UNSUPPORTED, "%s: the chat template does not render conversations incrementally", where); }
        if (!gen && strcmp(msgs[i].role, "assistant") == 0) {
            /* header | content + end-of-turn: the content starts where it is found after the header */
            const char *seg = buf + prev, *c = msgs[i].content;
            const char *at = strstr(seg, c);
            if (!*c || !at) { FT_FREE(buf); return ft_set_error(FT_ERR_FORMAT, "%s: assistant message %d is empty or not rendered by the template", where, i); }
            if ((r = ft__buf_push(b, tok, seg, at - seg, train_on_prompt, b->n == 0)) != FT_OK ||
                (r = ft__buf_push(b, tok, at, len - (at - buf), 1, 0)) != FT_OK) { FT_FREE(buf); return r; }
        } else if ((r = ft__buf_push(b, tok, buf + prev, len - prev, train_on_prompt, b->n == 0)) != FT_OK) { FT_FREE(buf); return r; }
        prev = len;
    }
    FT_FREE(buf);
    return FT_OK;
}

struct ft_dataset {
    ft_data_format format;
    ft_example *ex; int64_t n, cap;
    int64_t skipped, truncated, tokens;
};

static const char *ft__jstr(const ft_json *o, const char *key) {
    const ft_json *v = ft_json_get(o, key);
    return v && v->kind == FT_JSON_STRING ? v->s : NULL;
}

FT_API const char *ft_data_format_name(ft_data_format f) {
    const char *n = ft_enum_name(FT_ENUM_DATA_FORMAT, (int)f);
    return n ? n : "?";
}
static ft_data_format ft__detect_format(const ft_json *o) {
    if (ft_json_get(o, "chosen") && ft_json_get(o, "rejected")) return FT_DATA_PREFERENCE;
    if (ft_json_get(o, "completion") && ft_json_get(o, "label")) return FT_DATA_KTO;
    if (ft_json_get(o, "messages")) return FT_DATA_CHAT;
    if (ft_json_get(o, "instruction") && ft_json_get(o, "output")) return FT_DATA_INSTRUCT;
    if (ft_json_get(o, "text")) return FT_DATA_TEXT;
    if (ft_json_get(o, "prompt")) return FT_DATA_PROMPT;
    return FT_DATA_AUTO;
}

/* messages of a chat line, or a one-message conversation from a string prompt */
static ft_result ft__messages(const ft_json *v, ft_chat_msg *msgs, int cap, int *n, const char *where) {
    int64_t i;
    if (v && v->kind == FT_JSON_STRING) { msgs[0].role = "user"; msgs[0].content = v->s; *n = 1; return FT_OK; }
    if (!v || v->kind != FT_JSON_ARRAY || v->n < 1) return ft_set_error(FT_ERR_FORMAT, "%s: \"messages\" must be a non-empty array", where);
    if (v->n > cap) return ft_set_error(FT_ERR_FORMAT, "%s: more than %d messages", where, cap);
    for (i = 0; i < v->n; i++) {
        const ft_json *m = ft_json_at(v, i);
        msgs[i].role = ft__jstr(m, "role"); msgs[i].content = ft__jstr(m, "content");
        if (!msgs[i].role || !msgs[i].content)
            return ft_set_error(FT_ERR_FORMAT, "%s: message %d needs string \"role\" and \"content\"", where, (int)i);
        if (strcmp(msgs[i].role, "system") && strcmp(msgs[i].role, "user") && strcmp(msgs[i].role, "assistant"))
            return ft_set_error(FT_ERR_FORMAT, "%s: message %d has role \"%s\" (system, user or assistant)", where, (int)i, msgs[i].role);
    }
    *n = (int)v->n;
    return FT_OK;
}

static char *ft__strdup(const char *s) { return ft__strndup(s, strlen(s)); }

static void ft__shuffle(int64_t *a, int64_t n, uint64_t seed);

static void ft__example_free(ft_example *e) {
    FT_FREE(e->ids); FT_FREE(e->loss); FT_FREE(e->ids2); FT_FREE(e->loss2); FT_FREE(e->answer);
}

/* the formats, one function each: a JSON object (checked to be one) into the token buffer(s) */
static ft_result ft__ex_text(ft__buf *b, const ft_json *o, const ft_tokenizer *tok, const char *where) {
    const char *t = ft__jstr(o, "text"); char piece[64]; int64_t k; ft_result r;
    if (!t) return ft_set_error(FT_ERR_FORMAT, "%s: \"text\" must be a string", where);
    if (!*t) return ft_set_error(FT_ERR_FORMAT, "%s: \"text\" is empty", where);
    r = ft__buf_push(b, tok, t, -1, 1, 1);
    if (r != FT_OK || ft_tokenizer_eos(tok) < 0) return r;
    k = ft_token_to_piece(tok, ft_tokenizer_eos(tok), piece, sizeof piece - 1, 1);   /* documents end with EOS */
    return k > 0 && k < (int64_t)sizeof piece ? ft__buf_push(b, tok, piece, k, 1, 0) : FT_OK;
}
static ft_result ft__ex_instruct(ft__buf *b, const ft_json *o, const ft_tokenizer *tok, const char *tmpl, const ft_data_opts *opt, const char *where) {
    const char *ins = ft__jstr(o, "instruction"), *inp = ft__jstr(o, "input"), *out = ft__jstr(o, "output");
    const ft_json *iv = ft_json_get(o, "input");
    ft_chat_msg msgs[3]; int nm = 0; char *user; size_t n; ft_result r;
    if (!ins || !out || (iv && iv->kind != FT_JSON_STRING && iv->kind != FT_JSON_NULL))
        return ft_set_error(FT_ERR_FORMAT, "%s: \"instruction\" and \"output\" (and \"input\", if given) must be strings", where);
    if (!*out) return ft_set_error(FT_ERR_FORMAT, "%s: \"output\" is empty", where);
    n = strlen(ins) + (inp ? strlen(inp) : 0) + 3;
    if (!(user = FT__CAST(char *, FT_MALLOC(n)))) return ft_set_error(FT_ERR_NOMEM, "dataset: out of memory");
    snprintf(user, n, "%s%s%s", ins, inp && *inp ? "\n\n" : "", inp && *inp ? inp : "");
    if (opt->system) { msgs[nm].role = "system"; msgs[nm++].content = opt->system; }
    msgs[nm].role = "user"; msgs[nm++].content = user;
    msgs[nm].role = "assistant"; msgs[nm++].content = out;
    r = ft__render_chat(b, tok, tmpl, msgs, nm, opt->train_on_prompt, 0, where);
    FT_FREE(user);
    return r;
}
static ft_result ft__ex_chat(ft__buf *b, const ft_json *o, const ft_tokenizer *tok, const char *tmpl, const ft_data_opts *opt, const char *where) {
    ft_chat_msg msgs[64]; int nm = 0, i, any = 0; ft_result r;
    if ((r = ft__messages(ft_json_get(o, "messages"), msgs, 64, &nm, where)) != FT_OK) return r;
    for (i = 0; i < nm; i++) any |= strcmp(msgs[i].role, "assistant") == 0;
    if (!any) return ft_set_error(FT_ERR_FORMAT, "%s: no assistant message to learn from", where);
    return ft__render_chat(b, tok, tmpl, msgs, nm, opt->train_on_prompt, 0, where);
}
/* a completion after the rendered prompt msgs: its text and the end-of-turn marker the template
   puts after assistant turns (what the answered conversation adds to the generation prompt) */
static ft_result ft__ex_completion(ft__buf *b, const ft_tokenizer *tok, const char *tmpl, const ft_chat_msg *msgs, int nm, const char *c, const char *where) {
    ft_chat_msg full[65]; int64_t lp, lf; char *pb = NULL, *fb = NULL; ft_result r;
    memcpy(full, msgs, (size_t)nm * sizeof *msgs);
    full[nm].role = "assistant";
    full[nm].content = c;
    lp = ft_chat_apply(tmpl, msgs, nm, 1, NULL, 0);
    lf = ft_chat_apply(tmpl, full, nm + 1, 0, NULL, 0);
    pb = FT__CAST(char *, FT_MALLOC((size_t)FT__MAX(lp, 0) + 1));
    fb = FT__CAST(char *, FT_MALLOC((size_t)FT__MAX(lf, 0) + 1));
    if (lp < 0 || lf < 0 || !pb || !fb) r = ft_set_error(FT_ERR_FORMAT, "%s: chat template failed", where);
    else {
        ft_chat_apply(tmpl, msgs, nm, 1, pb, lp + 1);
        ft_chat_apply(tmpl, full, nm + 1, 0, fb, lf + 1);
        if (lf < lp || memcmp(pb, fb, (size_t)lp) != 0) r = ft_set_error(FT_ERR_UNSUPPORTED, "%s: the template's generation prompt is not a prefix of the answered conversation", where);
        else r = ft__buf_push(b, tok, fb + lp, lf - lp, 1, 0);
    }
    FT_FREE(pb); FT_FREE(fb);
    return r;
}
/* prompt data: the reference answer, a string or a number */
static ft_result ft__ex_answer(ft_example *e, const ft_json *o, const char *where) {
    const ft_json *a = ft_json_get(o, "answer"); char num[64];
    if (!a) return FT_OK;
    if (a->kind != FT_JSON_STRING && a->kind != FT_JSON_NUMBER) return ft_set_error(FT_ERR_FORMAT, "%s: \"answer\" must be a string or a number", where);
    if (a->kind == FT_JSON_NUMBER) snprintf(num, sizeof num, "%.17g", a->num);
    if (!(e->answer = ft__strdup(a->kind == FT_JSON_STRING ? a->s : num))) return ft_set_error(FT_ERR_NOMEM, "dataset: out of memory");
    return FT_OK;
}
/* preference, KTO and prompt data: the prompt (with the generation prompt) into b; the
   completions (chosen into b, rejected into b2 after the prompt again; KTO's one) with loss */
static ft_result ft__ex_prompted(ft_data_format f, ft__buf *b, ft__buf *b2, const ft_json *o, const ft_tokenizer *tok, const char *tmpl, const char *where, ft_example *e) {
    ft_chat_msg msgs[64]; int nm = 0, k; ft_result r; const ft_json *lv;
    if (ft__messages(ft_json_get(o, "prompt"), msgs, 64, &nm, where) != FT_OK) return ft_set_error(FT_ERR_FORMAT, "%s: \"prompt\" must be a string or a list of messages", where);
    if ((r = ft__render_chat(b, tok, tmpl, msgs, nm, 0, 1, where)) != FT_OK) return r;
    e->prompt_len = b->n;
    if (f == FT_DATA_PROMPT) return ft__ex_answer(e, o, where);
    for (k = 0; k < (f == FT_DATA_PREFERENCE ? 2 : 1) && r == FT_OK; k++) {
        const char *key = f == FT_DATA_KTO ? "completion" : k ? "rejected" : "chosen";
        const ft_json *cv = ft_json_get(o, key);
        const char *c = cv && cv->kind == FT_JSON_STRING ? cv->s : NULL;
        if (cv && cv->kind == FT_JSON_ARRAY && cv->n == 1) c = ft__jstr(ft_json_at(cv, 0), "content");   /* [{"role": "assistant", ...}] */
        if (!c || !*c) return ft_set_error(FT_ERR_FORMAT, "%s: \"%s\" must be a non-empty string", where, key);
        if (k) {                                      /* the rejected sequence repeats the prompt */
            memcpy(b2, b, sizeof *b);
            b2->cap = 0; b2->ids = NULL; b2->loss = NULL; b2->n = 0;
            if ((r = ft__render_chat(b2, tok, tmpl, msgs, nm, 0, 1, where)) != FT_OK) return r;
        }
        r = ft__ex_completion(k ? b2 : b, tok, tmpl, msgs, nm, c, where);
    }
    if (r != FT_OK || f != FT_DATA_KTO) return r;
    lv = ft_json_get(o, "label");
    if (!lv || lv->kind != FT_JSON_BOOL) return ft_set_error(FT_ERR_FORMAT, "%s: \"label\" must be true or false", where);
    e->label = (int)lv->num;
    return FT_OK;
}
/* one JSON line -> one example */
static ft_result ft__make_example(ft_dataset *d, const ft_json *o, const ft_tokenizer *tok, const char *tmpl,
                                  const ft_data_opts *opt, const char *where, ft_example *e) {
    ft__buf b, b2; ft_result r;
    memset(&b, 0, sizeof b); memset(&b2, 0, sizeof b2); memset(e, 0, sizeof *e);
    if (o->kind != FT_JSON_OBJECT) return ft_set_error(FT_ERR_FORMAT, "%s: a line must be a JSON object", where);
    switch (d->format) {
    case FT_DATA_TEXT: r = ft__ex_text(&b, o, tok, where); break;
    case FT_DATA_INSTRUCT: r = ft__ex_instruct(&b, o, tok, tmpl, opt, where); break;
    case FT_DATA_CHAT: r = ft__ex_chat(&b, o, tok, tmpl, opt, where); break;
    case FT_DATA_PREFERENCE: case FT_DATA_KTO: case FT_DATA_PROMPT: r = ft__ex_prompted(d->format, &b, &b2, o, tok, tmpl, where, e); break;
    default: r = ft_set_error(FT_ERR_FORMAT, "%s: unknown data format", where);
    }
    if (r != FT_OK) { FT_FREE(b.ids); FT_FREE(b.loss); FT_FREE(b2.ids); FT_FREE(b2.loss); ft__example_free(e); return r; }
    e->ids = b.ids; e->loss = b.loss; e->n = b.n;
    e->ids2 = b2.ids; e->loss2 = b2.loss; e->n2 = b2.n;
    return FT_OK;
}

FT_API ft_result ft_dataset_load(ft_dataset **out, const char *path, const ft_tokenizer *tok, const char *chat_template, const ft_data_opts *opts) {
    ft_dataset *d; ft_jsonl *f; ft_json_doc *doc; ft_result r; ft_data_opts o; char where[1100];
    *out = NULL;
    if (opts) o = *opts; else memset(&o, 0, sizeof o);
    if ((r = ft_jsonl_open(&f, path)) != FT_OK) return r;
    d = FT__CAST(ft_dataset *, FT_MALLOC(sizeof *d));
    if (!d) { ft_jsonl_close(f); return ft_set_error(FT_ERR_NOMEM, "%s: out of memory", path); }
    memset(d, 0, sizeof *d);
    d->format = o.format;
    for (;;) {
        ft_example e;
        r = ft_jsonl_next(f, &doc);
        snprintf(where, sizeof where, "%s:%lld", path, (long long)ft_jsonl_line(f));
        if (r == FT_OK && !doc) break;
        if (r == FT_OK) {
            if (d->format == FT_DATA_AUTO) {
                d->format = ft__detect_format(ft_json_root(doc));
                if (d->format == FT_DATA_AUTO) r = ft_set_error(FT_ERR_FORMAT, "%s: cannot tell the format from the keys (text, instruction/output, messages, prompt/chosen/rejected, prompt/completion/label, prompt)", where);
            }
            if (r == FT_OK) r = ft__make_example(d, ft_json_root(doc), tok, chat_template, &o, where, &e);
            ft_json_free(doc);
        }
        if (r == FT_OK && o.max_len > 0 && FT__MAX(e.n, e.n2) > o.max_len) {
            if (o.skip_long || e.prompt_len >= o.max_len) {
                r = ft_set_error(FT_ERR_FORMAT, "%s: %lld tokens, longer than max_len %lld", where, (long long)FT__MAX(e.n, e.n2), (long long)o.max_len);
                ft__example_free(&e);
            } else {                                    /* cut the end off */
                e.n = FT__MIN(e.n, o.max_len); if (e.ids2) e.n2 = FT__MIN(e.n2, o.max_len);
                d->truncated++;
            }
        }
        if (r != FT_OK) {
            if (!o.skip_bad) { ft_jsonl_close(f); ft_dataset_free(d); return r; }
            d->skipped++;
            if (o.log) o.log(o.log_user, 1, ft_last_error());
            continue;
        }
        if (d->n == d->cap) {
            int64_t nc = d->cap ? 2 * d->cap : 256;
            ft_example *ne = FT__CAST(ft_example *, FT_REALLOC(d->ex, (size_t)nc * sizeof *ne));
            if (!ne) { ft__example_free(&e); ft_jsonl_close(f); ft_dataset_free(d); return ft_set_error(FT_ERR_NOMEM, "%s: out of memory", path); }
            d->ex = ne; d->cap = nc;
        }
        d->ex[d->n++] = e;
        d->tokens += e.n + e.n2;
    }
    ft_jsonl_close(f);
    if (d->n == 0) { ft_dataset_free(d); return ft_set_error(FT_ERR_FORMAT, "%s: no usable examples", path); }
    *out = d;
    return FT_OK;
}

/* a copy of an example (the mixed and split datasets own their examples) */
static ft_result ft__example_copy(ft_example *dst, const ft_example *src) {
    *dst = *src;
    dst->ids = NULL; dst->loss = NULL; dst->ids2 = NULL; dst->loss2 = NULL; dst->answer = NULL;
    dst->ids = FT__CAST(int32_t *, FT_MALLOC((size_t)FT__MAX(src->n, 1) * sizeof(int32_t)));
    dst->loss = FT__CAST(unsigned char *, FT_MALLOC((size_t)FT__MAX(src->n, 1)));
    if (src->ids2) {
        dst->ids2 = FT__CAST(int32_t *, FT_MALLOC((size_t)FT__MAX(src->n2, 1) * sizeof(int32_t)));
        dst->loss2 = FT__CAST(unsigned char *, FT_MALLOC((size_t)FT__MAX(src->n2, 1)));
    }
    if (src->answer) dst->answer = ft__strdup(src->answer);
    if (!dst->ids || !dst->loss || (src->ids2 && (!dst->ids2 || !dst->loss2)) || (src->answer && !dst->answer)) {
        ft__example_free(dst);
        return ft_set_error(FT_ERR_NOMEM, "dataset: out of memory");
    }
    memcpy(dst->ids, src->ids, (size_t)src->n * sizeof(int32_t)); memcpy(dst->loss, src->loss, (size_t)src->n);
    if (src->ids2) { memcpy(dst->ids2, src->ids2, (size_t)src->n2 * sizeof(int32_t)); memcpy(dst->loss2, src->loss2, (size_t)src->n2); }
    return FT_OK;
}
static ft_result ft__dataset_new(ft_dataset **out, ft_data_format f, int64_t cap) {
    ft_dataset *d = FT__CAST(ft_dataset *, FT_MALLOC(sizeof *d));
    *out = NULL;
    if (!d) return ft_set_error(FT_ERR_NOMEM, "dataset: out of memory");
    memset(d, 0, sizeof *d);
    d->format = f;
    d->ex = FT__CAST(ft_example *, FT_MALLOC((size_t)FT__MAX(cap, 1) * sizeof(ft_example)));
    if (!d->ex) { FT_FREE(d); return ft_set_error(FT_ERR_NOMEM, "dataset: out of memory"); }
    d->cap = FT__MAX(cap, 1);
    *out = d;
    return FT_OK;
}
static ft_result ft__dataset_push(ft_dataset *d, const ft_example *e) {
    ft_result r;
    if (d->n == d->cap) {
        ft_example *ne = FT__CAST(ft_example *, FT_REALLOC(d->ex, (size_t)(2 * d->cap) * sizeof *ne));
        if (!ne) return ft_set_error(FT_ERR_NOMEM, "dataset: out of memory");
        d->ex = ne; d->cap *= 2;
    }
    if ((r = ft__example_copy(&d->ex[d->n], e)) != FT_OK) return r;
    d->tokens += e->n + e->n2;
    d->n++;
    return FT_OK;
}

FT_API ft_result ft_dataset_new(ft_dataset **out, ft_data_format format) {
    return ft__dataset_new(out, format, 16);
}
FT_API ft_result ft_dataset_add(ft_dataset *d, const ft_example *e) {
    ft_example c = *e;
    unsigned char *ones = NULL;
    ft_result r;
    if (!e->ids || e->n < 1 || (e->ids2 && e->n2 < 1)) return ft_set_error(FT_ERR_INVALID, "ft_dataset_add: an example needs ids and n >= 1");
    if (!e->loss || (e->ids2 && !e->loss2)) {        /* no mask given: every token is a target */
        ones = FT__CAST(unsigned char *, FT_MALLOC((size_t)FT__MAX(e->n, e->n2)));
        if (!ones) return ft_set_error(FT_ERR_NOMEM, "ft_dataset_add: out of memory");
        memset(ones, 1, (size_t)FT__MAX(e->n, e->n2));
        if (!c.loss) c.loss = ones;
        if (c.ids2 && !c.loss2) c.loss2 = ones;
    }
    r = ft__dataset_push(d, &c);
    FT_FREE(ones);
    return r;
}

/* a held-out split: a seeded random `frac` of the examples moves to *eval (at least one) */
FT_API ft_result ft_dataset_split(ft_dataset *d, double frac, uint64_t seed, ft_dataset **eval) {
    int64_t n = d->n, k = (int64_t)(frac * (double)n + 0.5), i, j, *perm; ft_result r; unsigned char *take;
    *eval = NULL;
    if (!(frac > 0 && frac < 1) || n < 2) return ft_set_error(FT_ERR_INVALID, "dataset split: fraction %g of %lld examples", frac, (long long)n);
    k = FT__MAX(1, FT__MIN(k, n - 1));
    perm = FT__CAST(int64_t *, FT_MALLOC((size_t)n * sizeof(int64_t)));
    take = FT__CAST(unsigned char *, FT_MALLOC((size_t)n));
    if (!perm || !take) { FT_FREE(perm); FT_FREE(take); return ft_set_error(FT_ERR_NOMEM, "dataset split: out of memory"); }
    ft__shuffle(perm, n, seed);
    memset(take, 0, (size_t)n);
    for (i = 0; i < k; i++) take[perm[i]] = 1;
    if ((r = ft__dataset_new(eval, d->format, k)) == FT_OK) {
        for (i = 0, j = 0; i < n; i++) {                 /* keep the order of both parts */
            if (take[i]) { r = ft__dataset_push(*eval, &d->ex[i]); ft__example_free(&d->ex[i]); d->tokens -= d->ex[i].n + d->ex[i].n2; }
            else d->ex[j++] = d->ex[i];
            if (r != FT_OK) break;
        }
        d->n = j;
    }
    FT_FREE(perm); FT_FREE(take);
    return r;
}

/* n_total examples drawn from the parts in proportion to ratios (e.g. 0.9 domain, 0.1 general
   replay against forgetting), each part cycled in a seeded random order, interleaved at random */
FT_API ft_result ft_dataset_mix(ft_dataset **out, ft_dataset *const *parts, const double *ratios, int n_parts, int64_t n_total, uint64_t seed) {
    double sum = 0; int p; int64_t i, *cursor, **orders; ft_result r = FT_OK; ft_rng rng;
    *out = NULL;
    if (n_parts < 1 || n_total < 1) return ft_set_error(FT_ERR_INVALID, "dataset mix: %d parts, %lld examples", n_parts, (long long)n_total);
    for (p = 0; p < n_parts; p++) {
        if (!(ratios[p] > 0) || !parts[p] || parts[p]->n < 1) return ft_set_error(FT_ERR_INVALID, "dataset mix: part %d is empty or has ratio %g", p, ratios[p]);
        if (parts[p]->format != parts[0]->format && !((parts[p]->format == FT_DATA_INSTRUCT || parts[p]->format == FT_DATA_CHAT || parts[p]->format == FT_DATA_TEXT) &&
                                                     (parts[0]->format == FT_DATA_INSTRUCT || parts[0]->format == FT_DATA_CHAT || parts[0]->format == FT_DATA_TEXT)))
            return ft_set_error(FT_ERR_INVALID, "dataset mix: part %d is %s data, part 0 %s", p, ft_data_format_name(parts[p]->format), ft_data_format_name(parts[0]->format));
        sum += ratios[p];
    }
    cursor = FT__CAST(int64_t *, FT_MALLOC((size_t)n_parts * sizeof(int64_t)));
    orders = FT__CAST(int64_t **, FT_MALLOC((size_t)n_parts * sizeof(int64_t *)));
    if (!cursor || !orders) { FT_FREE(cursor); FT_FREE(orders); return ft_set_error(FT_ERR_NOMEM, "dataset mix: out of memory"); }
    for (p = 0; p < n_parts; p++) {
        cursor[p] = 0;
        orders[p] = FT__CAST(int64_t *, FT_MALLOC((size_t)parts[p]->n * sizeof(int64_t)));
        if (!orders[p]) r = ft_set_error(FT_ERR_NOMEM, "dataset mix: out of memory");
        else ft__shuffle(orders[p], parts[p]->n, seed + 1000003ull * (uint64_t)(p + 1));
    }
    ft_rng_seed(&rng, seed);
    if (r == FT_OK) r = ft__dataset_new(out, parts[0]->format, n_total);
    for (i = 0; i < n_total && r == FT_OK; i++) {
        double u = ft_rng_uniform(&rng) * sum, acc = 0; const ft_dataset *d;
        for (p = 0; p < n_parts - 1; p++) { acc += ratios[p]; if (u < acc) break; }
        d = parts[p];
        r = ft__dataset_push(*out, &d->ex[orders[p][cursor[p]]]);
        if (++cursor[p] == d->n) cursor[p] = 0;
    }
    for (p = 0; p < n_parts; p++) FT_FREE(orders[p]);
    FT_FREE(orders); FT_FREE(cursor);
    if (r != FT_OK) { ft_dataset_free(*out); *out = NULL; }
    return r;
}

/* multi-task mixing rates (T5 section 3.5.2, FLAN): r_i = m_i^(1/T) / sum_j m_j^(1/T) with
   m_i = min(n_i, cap) (cap <= 0: no cap). T = 1 is examples-proportional mixing, larger T flattens
   towards equal rates (T -> infinity), the cap keeps a huge task from drowning the small ones. */
FT_API ft_result ft_mix_ratios(const int64_t *sizes, int n, double temperature, double cap, double *out) {
    double sum = 0; int i;
    if (n < 1 || !(temperature > 0) || !isfinite(temperature)) return ft_set_error(FT_ERR_INVALID, "mix ratios: %d tasks, temperature %g (> 0)", n, temperature);
    for (i = 0; i < n; i++) {
        double m = (double)sizes[i];
        if (sizes[i] < 1) return ft_set_error(FT_ERR_INVALID, "mix ratios: task %d has %lld examples", i, (long long)sizes[i]);
        if (cap > 0 && m > cap) m = cap;
        out[i] = pow(m, 1.0 / temperature);
        sum += out[i];
    }
    for (i = 0; i < n; i++) out[i] /= sum;
    return FT_OK;
}

FT_API void ft_dataset_free(ft_dataset *d) {
    int64_t i;
    if (!d) return;
    for (i = 0; i < d->n; i++) ft__example_free(&d->ex[i]);
    FT_FREE(d->ex); FT_FREE(d);
}
FT_API int64_t ft_dataset_size(const ft_dataset *d) { return d->n; }
FT_API const ft_example *ft_dataset_get(const ft_dataset *d, int64_t i) { return i >= 0 && i < d->n ? &d->ex[i] : NULL; }
FT_API ft_data_format ft_dataset_format(const ft_dataset *d) { return d->format; }
FT_API int64_t ft_dataset_skipped(const ft_dataset *d) { return d->skipped; }
FT_API int64_t ft_dataset_truncated(const ft_dataset *d) { return d->truncated; }
/* does a sequence keep a target within T tokens? (ids[t] is predicted from t - 1: 1 <= t < T) */
static int ft__keeps_target(const unsigned char *loss, int64_t n, int64_t T) {
    int64_t t, end = FT__MIN(n, T);
    for (t = 1; t < end; t++)
        if (!loss || loss[t]) return 1;
    return 0;
}
FT_API int64_t ft_dataset_without_targets(const ft_dataset *d, int64_t seq_len) {
    int64_t i, none = 0;
    if (d->format == FT_DATA_PROMPT) return 0;
    for (i = 0; i < d->n; i++) {
        const ft_example *e = &d->ex[i];
        none += !ft__keeps_target(e->loss, e->n, seq_len) || (e->ids2 && !ft__keeps_target(e->loss2, e->n2, seq_len));
    }
    return none;
}
FT_API int64_t ft_dataset_tokens(const ft_dataset *d) { return d->tokens; }

/* ============================================================================================
   [optim] optimizers over a parameter block: AdamW and SGD with momentum
   AdamW (decoupled, as PyTorch):  p -= lr*wd*p;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
                                   p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
   SGD:                            b = mu b + g;  p -= lr * (b + wd p)
   The moments live in one block allocated at init. A step with a non-finite gradient changes
   nothing and returns FT_ERR_NUMERIC.
   ============================================================================================ */
struct ft_optim {
    ft_params *P;
    ft_optim_opts o;
    float *m, *v;                   /* moments, laid out like the parameter block              */
    float *lr_scale;                /* per parameter tensor (LoRA+: a larger rate for B)        */
    int64_t t;                      /* steps taken                                              */
};

FT_API ft_optim_opts ft_optim_opts_default(void) {
    ft_optim_opts o;
    memset(&o, 0, sizeof o);
    o.kind = FT_OPTIM_ADAMW;
    o.beta1 = 0.9f;
    o.beta2 = 0.999f;
    o.eps = 1e-8f;
    return o;
}

FT_API ft_result ft_optim_init(ft_optim **out, ft_params *P, const ft_optim_opts *opts) {
    ft_optim *o; int i;
    ft_optim_opts d = ft_optim_opts_default();
    *out = NULL;
    if (!P->data) return ft_set_error(FT_ERR_STATE, "optimizer: the parameter block is not allocated");
    o = FT__CAST(ft_optim *, FT_MALLOC(sizeof *o));
    if (!o) return ft_set_error(FT_ERR_NOMEM, "optimizer: out of memory");
    memset(o, 0, sizeof *o);
    o->P = P;
    o->o = opts ? *opts : d;
    if (o->o.beta1 <= 0) o->o.beta1 = d.beta1;
    if (o->o.beta2 <= 0) o->o.beta2 = d.beta2;
    if (o->o.eps <= 0) o->o.eps = d.eps;
    o->m = FT__CAST(float *, ft__aligned_alloc((size_t)FT__MAX(P->total, 1) * sizeof(float) * 2));
    o->lr_scale = FT__CAST(float *, FT_MALLOC((size_t)FT__MAX(P->n, 1) * sizeof(float)));
    if (!o->m || !o->lr_scale) { ft_optim_free(o); return ft_set_error(FT_ERR_NOMEM, "optimizer: %lld moments", (long long)P->total); }
    o->v = o->m + P->total;
    memset(o->m, 0, (size_t)P->total * 2 * sizeof(float));
    for (i = 0; i < P->n; i++) o->lr_scale[i] = 1.0f;
    *out = o;
    return FT_OK;
}
FT_API void ft_optim_free(ft_optim *o) {
    if (!o) return;
    ft__aligned_free(o->m); FT_FREE(o->lr_scale); FT_FREE(o);
}
FT_API void ft_optim_set_lr_scale(ft_optim *o, const ft_tensor *t, float scale) {
    int i;
    for (i = 0; i < o->P->n; i++) if (o->P->t[i] == t) o->lr_scale[i] = scale;
}
FT_API int64_t ft_optim_steps(const ft_optim *o) { return o->t; }

/* global L2 norm of every gradient in the block (in double, in a fixed order) */
FT_API double ft_params_grad_norm(const ft_params *P) {
    double s = 0; int64_t i;
    for (i = 0; i < P->total; i++) s += (double)P->grad[i] * (double)P->grad[i];
    return sqrt(s);
}
FT_API void ft_params_scale_grad(ft_params *P, float k) { ft__vec_scale(P->total, P->grad, k, P->grad); }

FT_API ft_result ft_optim_step(ft_optim *o, float lr) {
    ft_params *P = o->P; int i; int64_t j;
    double b1t, b2t;
    for (j = 0; j < P->total; j++)
        if (!isfinite(P->grad[j])) {
            for (i = 0; i < P->n && !(P->t[i]->grad <= P->grad + j && P->grad + j < P->t[i]->grad + ft_numel(P->t[i])); i++) {}
            return ft_set_error(FT_ERR_NUMERIC, "optimizer: gradient of %s is %g; no parameter was changed",
                                i < P->n ? P->t[i]->name : "?", (double)P->grad[j]);
        }
    o->t++;
    b1t = 1.0 - pow(o->o.beta1, (double)o->t); b2t = 1.0 - pow(o->o.beta2, (double)o->t);
    for (i = 0; i < P->n; i++) {
        ft_tensor *t = P->t[i];
        float *p = FT__F(t), *g = t->grad, *m = o->m + (t->grad - P->grad), *v = o->v + (t->grad - P->grad);
        float a = lr * o->lr_scale[i], wd = o->o.weight_decay; int64_t n = ft_numel(t);
        if (!(t->flags & FT_TENSOR_REQUIRES_GRAD)) continue;
        if (o->o.kind == FT_OPTIM_SGD) {
            for (j = 0; j < n; j++) {
                m[j] = o->o.momentum * m[j] + g[j];
                p[j] -= a * (m[j] + wd * p[j]);
            }
        } else {
            float c1 = (float)(1.0 / b1t), c2 = (float)(1.0 / b2t), b1 = o->o.beta1, b2 = o->o.beta2, eps = o->o.eps;
            for (j = 0; j < n; j++) {
                p[j] -= a * wd * p[j];
                m[j] = b1 * m[j] + (1.0f - b1) * g[j];
                v[j] = b2 * v[j] + (1.0f - b2) * g[j] * g[j];
                p[j] -= a * (m[j] * c1) / (sqrtf(v[j] * c2) + eps);
            }
        }
        t->version++;                           /* the tape must not reuse the old values */
    }
    return FT_OK;
}


/* ============================================================================================
   [objectives] losses over log-probabilities, as TRL 1.16 defines them
   A pairwise loss sees (B) log-probs of the chosen and rejected completions under the policy
   (on the tape) and, for most, the reference (the adapter off). With the log-ratios
   c = pc - rc, r = pr - rr (policy minus reference), z = c - r and beta b:
      dpo          -(1-e) logsig(b z) - e logsig(-b z)    (e: label smoothing, cDPO; TRL 1.16's
                                                            sigmoid is e = 0)
      ipo          (z - 1/(2b))^2                         on per-token mean log-probs
      hinge        relu(1 - b z)
      robust       (-(1-e) logsig(b z) + e logsig(-b z)) / (1 - 2e)
      exo_pair     sig(b z)(logsig(b z) - log(1-e)) + sig(-b z)(logsig(-b z) - log e)   (e 1e-3)
      nca_pair     -logsig(b c) - logsig(-b c)/2 - logsig(-b r)/2
      bco_pair     -logsig(b c) - logsig(-b r)
      sppo_hard    (c - 1/(2b))^2 + (r + 1/(2b))^2
      aot          -(1-e) logsig(b d) - e logsig(-b d),  d = sort(pc - pr) - sort(rc - rr)
      aot_unpaired the same with d = sort(c) - sort(r)
      apo_zero     1 - sig(b c) + sig(b r)
      apo_down     sig(b c) + 1 - sig(b z)
      discopop     -logsig(b z) (1 - m) + exp(-b z) m,  m = sig(b z / tau)   (tau 0.05)
      sigmoid_norm -logsig(b z)                           on per-token mean log-probs
      simpo        -(1-e) logsig(b (pc - pr) - g) - e logsig(-(b (pc - pr) - g))   (mean log-probs,
                                                            no reference)
      orpo         nll(chosen) - b mean(logsig(lo)),  lo = (pc - pr) - (log1mexp(pc) - log1mexp(pr))
   and, for the other kinds, RM: -logsig(rc - rr - margin) + k mean((rc + rr)^2); KTO below.
   Each returns the mean loss (shape (1)) and fills the metrics TRL logs.
   ============================================================================================ */
static ft_tensor *ft__const(ft_ctx *ctx, int64_t n, float v) {
    ft_tensor *t = ft_tensor_1d(ctx, n); int64_t i;
    if (t) for (i = 0; i < n; i++) FT__F(t)[i] = v;
    return t;
}
static void ft__pref_stats(ft_pref_stats *st, const ft_tensor *pc, const ft_tensor *pr, const ft_tensor *rc, const ft_tensor *rr, float beta) {
    int64_t i, n; double c = 0, r = 0, acc = 0;
    if (!st || !pc || !pr) return;
    n = ft_numel(pc);
    for (i = 0; i < n; i++) {
        double ci = beta * (FT__F(pc)[i] - (rc ? FT__F(rc)[i] : 0.0f)), ri = beta * (FT__F(pr)[i] - (rr ? FT__F(rr)[i] : 0.0f));
        c += ci; r += ri; acc += ci > ri;
    }
    st->rewards_chosen = c / (double)n; st->rewards_rejected = r / (double)n;
    st->rewards_margins = (c - r) / (double)n; st->rewards_accuracies = acc / (double)n;
    st->logps_chosen = 0; st->logps_rejected = 0;
    for (i = 0; i < n; i++) { st->logps_chosen += FT__F(pc)[i] / (double)n; st->logps_rejected += FT__F(pr)[i] / (double)n; }
}
/* -(1-e) logsig(x) - e logsig(-x), per element */
static ft_tensor *ft__smoothed_logsig(ft_ctx *ctx, ft_tensor *x, float e) {
    ft_tensor *l = ft_scale(ctx, ft_logsigmoid(ctx, x), -(1.0f - e));
    return e > 0 ? ft_add(ctx, l, ft_scale(ctx, ft_logsigmoid(ctx, ft_scale(ctx, x, -1.0f)), -e)) : l;
}
/* the log-ratios of a pair: c = pc - rc, r = pr - rr (pc, pr themselves without a reference) */
static ft_tensor *ft__lr_chosen(ft_ctx *ctx, const ft_pair_logps *lp) { return lp->ref_chosen ? ft_sub(ctx, lp->chosen, lp->ref_chosen) : lp->chosen; }
static ft_tensor *ft__lr_rejected(ft_ctx *ctx, const ft_pair_logps *lp) { return lp->ref_rejected ? ft_sub(ctx, lp->rejected, lp->ref_rejected) : lp->rejected; }
/* b z with z = c - r, and the metrics every DPO-family loss logs */
static ft_tensor *ft__pair_bz(ft_ctx *ctx, const ft_pair_logps *lp, float beta, ft_pref_stats *st) {
    ft__pref_stats(st, lp->chosen, lp->rejected, lp->ref_chosen, lp->ref_rejected, beta);
    return ft_scale(ctx, ft_sub(ctx, ft__lr_chosen(ctx, lp), ft__lr_rejected(ctx, lp)), beta);
}
/* x sorted ascending (B), on the tape: a gather of x's rows in sorted order (torch.sort's values) */
static ft_tensor *ft__sorted(ft_ctx *ctx, ft_tensor *x) {
    int64_t n, i, j, s2[2]; int32_t *idx;
    FT__IN(x);
    n = ft_numel(x);
    idx = FT__CAST(int32_t *, ft__arena_alloc(ctx, (size_t)n * sizeof(int32_t)));
    if (!idx) return ft__fail(ctx, FT_ERR_NOMEM, "sort: arena out of memory");
    for (i = 0; i < n; i++) {                          /* insertion sort: B is a batch size */
        int32_t k = (int32_t)i;
        for (j = i; j > 0 && FT__F(x)[idx[j - 1]] > FT__F(x)[k]; j--) idx[j] = idx[j - 1];
        idx[j] = k;
    }
    s2[0] = n; s2[1] = 1;
    s2[0] = n;
    return ft_reshape(ctx, ft_embedding(ctx, ft_reshape(ctx, x, 2, s2), idx, n), 1, s2);
}

static ft_tensor *ft__loss_dpo(ft_ctx *ctx, const ft_pair_logps *lp, const ft_train_opts *o, ft_pref_stats *st) {
    return ft_mean(ctx, ft__smoothed_logsig(ctx, ft__pair_bz(ctx, lp, o->beta, st), o->label_smoothing));
}
static ft_tensor *ft__loss_ipo(ft_ctx *ctx, const ft_pair_logps *lp, const ft_train_opts *o, ft_pref_stats *st) {
    ft_tensor *z = ft_scale(ctx, ft__pair_bz(ctx, lp, o->beta, st), 1.0f / o->beta), *d;
    FT__IN(z);
    d = ft_sub(ctx, z, ft__const(ctx, ft_numel(z), 1.0f / (2.0f * o->beta)));
    return ft_mean(ctx, ft_mul(ctx, d, d));
}
static ft_tensor *ft__loss_hinge(ft_ctx *ctx, const ft_pair_logps *lp, const ft_train_opts *o, ft_pref_stats *st) {
    ft_tensor *bz = ft__pair_bz(ctx, lp, o->beta, st);
    FT__IN(bz);
    return ft_mean(ctx, ft_relu(ctx, ft_sub(ctx, ft__const(ctx, ft_numel(bz), 1.0f), bz)));
}
static ft_tensor *ft__loss_robust(ft_ctx *ctx, const ft_pair_logps *lp, const ft_train_opts *o, ft_pref_stats *st) {
    float e = o->label_smoothing;
    ft_tensor *x = ft__pair_bz(ctx, lp, o->beta, st), *l;
    if (e >= 0.5f) return ft__fail(ctx, FT_ERR_INVALID, "robust dpo: label smoothing %g must be below 0.5", (double)e);
    l = ft_add(ctx, ft_scale(ctx, ft_logsigmoid(ctx, x), -(1.0f - e)), ft_scale(ctx, ft_logsigmoid(ctx, ft_scale(ctx, x, -1.0f)), e));
    return ft_mean(ctx, ft_scale(ctx, l, 1.0f / (1.0f - 2.0f * e)));
}
static ft_tensor *ft__loss_exo_pair(ft_ctx *ctx, const ft_pair_logps *lp, const ft_train_opts *o, ft_pref_stats *st) {
    float e = o->label_smoothing;
    ft_tensor *x = ft__pair_bz(ctx, lp, o->beta, st), *nx, *w, *l;
    if (!(e > 0 && e < 1)) return ft__fail(ctx, FT_ERR_INVALID, "exo_pair: label smoothing %g must be in (0, 1) (the paper's 1e-3)", (double)e);
    FT__IN(x);
    nx = ft_scale(ctx, x, -1.0f);
    w = ft_mul(ctx, ft_sigmoid(ctx, x), ft_sub(ctx, ft_logsigmoid(ctx, x), ft__const(ctx, 1, (float)log1p(-(double)e))));
    l = ft_mul(ctx, ft_sigmoid(ctx, nx), ft_sub(ctx, ft_logsigmoid(ctx, nx), ft__const(ctx, 1, (float)log((double)e))));
    return ft_mean(ctx, ft_add(ctx, w, l));
}
static ft_tensor *ft__loss_nca_pair(ft_ctx *ctx, const ft_pair_logps *lp, const ft_train_opts *o, ft_pref_stats *st) {
    ft_tensor *c = ft_scale(ctx, ft__lr_chosen(ctx, lp), o->beta), *r = ft_scale(ctx, ft__lr_rejected(ctx, lp), o->beta), *l;
    ft__pref_stats(st, lp->chosen, lp->rejected, lp->ref_chosen, lp->ref_rejected, o->beta);
    l = ft_add(ctx, ft_logsigmoid(ctx, c), ft_scale(ctx, ft_add(ctx, ft_logsigmoid(ctx, ft_scale(ctx, c, -1.0f)),
                                                              ft_logsigmoid(ctx, ft_scale(ctx, r, -1.0f))), 0.5f));
    return ft_scale(ctx, ft_mean(ctx, l), -1.0f);
}
static ft_tensor *ft__loss_bco_pair(ft_ctx *ctx, const ft_pair_logps *lp, const ft_train_opts *o, ft_pref_stats *st) {
    ft_tensor *c = ft_scale(ctx, ft__lr_chosen(ctx, lp), o->beta), *r = ft_scale(ctx, ft__lr_rejected(ctx, lp), o->beta);
    ft__pref_stats(st, lp->chosen, lp->rejected, lp->ref_chosen, lp->ref_rejected, o->beta);
    return ft_scale(ctx, ft_mean(ctx, ft_add(ctx, ft_logsigmoid(ctx, c), ft_logsigmoid(ctx, ft_scale(ctx, r, -1.0f)))), -1.0f);
}
static ft_tensor *ft__loss_sppo_hard(ft_ctx *ctx, const ft_pair_logps *lp, const ft_train_opts *o, ft_pref_stats *st) {
    ft_tensor *c = ft__lr_chosen(ctx, lp), *r = ft__lr_rejected(ctx, lp), *a, *b;
    float h = 0.5f / o->beta;
    FT__IN(c); FT__IN(r);
    ft__pref_stats(st, lp->chosen, lp->rejected, lp->ref_chosen, lp->ref_rejected, o->beta);
    a = ft_sub(ctx, c, ft__const(ctx, 1, h));
    b = ft_add(ctx, r, ft__const(ctx, 1, h));
    return ft_mean(ctx, ft_add(ctx, ft_mul(ctx, a, a), ft_mul(ctx, b, b)));
}
static ft_tensor *ft__loss_aot(ft_ctx *ctx, const ft_pair_logps *lp, const ft_train_opts *o, ft_pref_stats *st) {
    ft_tensor *d;
    if (!lp->ref_chosen || !lp->ref_rejected) return ft__fail(ctx, FT_ERR_INVALID, "aot: needs the reference's log-probs");
    ft__pref_stats(st, lp->chosen, lp->rejected, lp->ref_chosen, lp->ref_rejected, o->beta);
    d = ft_sub(ctx, ft__sorted(ctx, ft_sub(ctx, lp->chosen, lp->rejected)), ft__sorted(ctx, ft_sub(ctx, lp->ref_chosen, lp->ref_rejected)));
    return ft_mean(ctx, ft__smoothed_logsig(ctx, ft_scale(ctx, d, o->beta), o->label_smoothing));
}
static ft_tensor *ft__loss_aot_unpaired(ft_ctx *ctx, const ft_pair_logps *lp, const ft_train_opts *o, ft_pref_stats *st) {
    ft_tensor *d;
    ft__pref_stats(st, lp->chosen, lp->rejected, lp->ref_chosen, lp->ref_rejected, o->beta);
    d = ft_sub(ctx, ft__sorted(ctx, ft__lr_chosen(ctx, lp)), ft__sorted(ctx, ft__lr_rejected(ctx, lp)));
    return ft_mean(ctx, ft__smoothed_logsig(ctx, ft_scale(ctx, d, o->beta), o->label_smoothing));
}
static ft_tensor *ft__loss_apo_zero(ft_ctx *ctx, const ft_pair_logps *lp, const ft_train_opts *o, ft_pref_stats *st) {
    ft_tensor *c = ft_scale(ctx, ft__lr_chosen(ctx, lp), o->beta), *r = ft_scale(ctx, ft__lr_rejected(ctx, lp), o->beta);
    FT__IN(c);
    ft__pref_stats(st, lp->chosen, lp->rejected, lp->ref_chosen, lp->ref_rejected, o->beta);
    return ft_mean(ctx, ft_add(ctx, ft_sub(ctx, ft__const(ctx, ft_numel(c), 1.0f), ft_sigmoid(ctx, c)), ft_sigmoid(ctx, r)));
}
static ft_tensor *ft__loss_apo_down(ft_ctx *ctx, const ft_pair_logps *lp, const ft_train_opts *o, ft_pref_stats *st) {
    ft_tensor *c = ft_scale(ctx, ft__lr_chosen(ctx, lp), o->beta), *bz = ft__pair_bz(ctx, lp, o->beta, st);
    FT__IN(c);
    return ft_mean(ctx, ft_add(ctx, ft_sigmoid(ctx, c), ft_sub(ctx, ft__const(ctx, ft_numel(c), 1.0f), ft_sigmoid(ctx, bz))));
}
static ft_tensor *ft__loss_discopop(ft_ctx *ctx, const ft_pair_logps *lp, const ft_train_opts *o, ft_pref_stats *st) {
    ft_tensor *x = ft__pair_bz(ctx, lp, o->beta, st), *mod, *logistic, *expo;
    FT__IN(x);
    mod = ft_sigmoid(ctx, ft_scale(ctx, x, 1.0f / o->tau));
    logistic = ft_scale(ctx, ft_logsigmoid(ctx, x), -1.0f);
    expo = ft_exp(ctx, ft_scale(ctx, x, -1.0f));
    return ft_mean(ctx, ft_add(ctx, ft_sub(ctx, logistic, ft_mul(ctx, logistic, mod)), ft_mul(ctx, expo, mod)));
}
static ft_tensor *ft__loss_sigmoid_norm(ft_ctx *ctx, const ft_pair_logps *lp, const ft_train_opts *o, ft_pref_stats *st) {
    return ft_mean(ctx, ft_scale(ctx, ft_logsigmoid(ctx, ft__pair_bz(ctx, lp, o->beta, st)), -1.0f));
}
static ft_tensor *ft__loss_simpo(ft_ctx *ctx, const ft_pair_logps *lp, const ft_train_opts *o, ft_pref_stats *st) {
    ft_tensor *x;
    FT__IN(lp->chosen); FT__IN(lp->rejected);
    x = ft_sub(ctx, ft_scale(ctx, ft_sub(ctx, lp->chosen, lp->rejected), o->beta), ft__const(ctx, ft_numel(lp->chosen), o->gamma));
    ft__pref_stats(st, lp->chosen, lp->rejected, NULL, NULL, o->beta);
    return ft_mean(ctx, ft__smoothed_logsig(ctx, x, o->label_smoothing));
}
static ft_tensor *ft__loss_orpo(ft_ctx *ctx, const ft_pair_logps *lp, const ft_train_opts *o, ft_pref_stats *st) {
    ft_tensor *pc = lp->chosen, *pr = lp->rejected, *lo, *ratio;
    FT__IN(pc); FT__IN(pr); FT__IN(lp->nll);
    lo = ft_sub(ctx, ft_sub(ctx, pc, pr), ft_sub(ctx, ft_log1mexp(ctx, pc), ft_log1mexp(ctx, pr)));
    ratio = ft_logsigmoid(ctx, lo);
    ft__pref_stats(st, pc, pr, NULL, NULL, o->beta);
    if (st && ratio && lo) {
        int64_t i, n = ft_numel(lo); double a = 0, b = 0;
        for (i = 0; i < n; i++) { a += FT__F(ratio)[i] / (double)n; b += FT__F(lo)[i] / (double)n; }
        st->log_odds_ratio = a; st->log_odds_chosen = b;
    }
    return ft_sub(ctx, lp->nll, ft_scale(ctx, ft_mean(ctx, ratio), o->beta));
}

FT_API ft_tensor *ft_rm_loss(ft_ctx *ctx, ft_tensor *rc, ft_tensor *rr, const float *margin, float center_coef, ft_pref_stats *st) {
    ft_tensor *d, *l;
    FT__IN(rc); FT__IN(rr);
    d = ft_sub(ctx, rc, rr);
    if (margin) {
        ft_tensor *m = ft_tensor_1d(ctx, ft_numel(rc));
        FT__IN(m);
        memcpy(m->data, margin, (size_t)ft_numel(rc) * sizeof(float));
        d = ft_sub(ctx, d, m);
    }
    l = ft_mean(ctx, ft_scale(ctx, ft_logsigmoid(ctx, d), -1.0f));
    if (center_coef > 0) { ft_tensor *s = ft_add(ctx, rc, rr); l = ft_add(ctx, l, ft_scale(ctx, ft_mean(ctx, ft_mul(ctx, s, s)), center_coef)); }
    ft__pref_stats(st, rc, rr, NULL, NULL, 1.0f);
    return l;
}

/* KTO (Ethayarajh et al. 2024) as TRL computes it: rho = policy - reference log-prob of each
   completion; z0 = max(0, mean(klp - krp)) from mismatched pairs, detached; a desirable completion
   costs w_d (1 - sig(beta (rho - z0))), an undesirable one w_u (1 - sig(beta (z0 - rho))); the
   loss is the mean over the whole batch */
FT_API ft_tensor *ft_kto_loss(ft_ctx *ctx, ft_tensor *lp, ft_tensor *rp, ft_tensor *klp, ft_tensor *krp, const int *desirable,
                              float beta, float desirable_weight, float undesirable_weight, ft_pref_stats *st) {
    int64_t i, n; double kl = 0, c = 0, r = 0, lc = 0, lr = 0; int64_t nc = 0, nr = 0;
    ft_tensor *rho, *sign, *w, *x;
    FT__IN(lp); FT__IN(rp);
    n = ft_numel(lp);
    if (ft_numel(rp) != n || (klp && (!krp || ft_numel(klp) != ft_numel(krp))))
        return ft__fail(ctx, FT_ERR_SHAPE, "kto loss: log-prob vectors of different lengths");
    if (klp) {
        int64_t k = ft_numel(klp);
        for (i = 0; i < k; i++) kl += ((double)FT__F(klp)[i] - (double)FT__F(krp)[i]) / (double)k;
        if (kl < 0) kl = 0;
    }
    sign = ft_tensor_1d(ctx, n); w = ft_tensor_1d(ctx, n);
    FT__IN(sign); FT__IN(w);
    for (i = 0; i < n; i++) {
        FT__F(sign)[i] = desirable[i] ? beta : -beta;
        FT__F(w)[i] = desirable[i] ? desirable_weight : undesirable_weight;
    }
    rho = ft_sub(ctx, lp, rp);
    x = ft_mul(ctx, ft_sub(ctx, rho, ft__const(ctx, n, (float)kl)), sign);       /* +-beta (rho - z0) */
    if (st && rho) {
        memset(st, 0, sizeof *st);
        for (i = 0; i < n; i++) {
            double ri = beta * (double)FT__F(rho)[i];
            if (desirable[i]) { c += ri; lc += FT__F(lp)[i]; nc++; } else { r += ri; lr += FT__F(lp)[i]; nr++; }
        }
        st->rewards_chosen = nc ? c / (double)nc : 0; st->rewards_rejected = nr ? r / (double)nr : 0;
        st->rewards_margins = st->rewards_chosen - st->rewards_rejected;
        st->logps_chosen = nc ? lc / (double)nc : 0; st->logps_rejected = nr ? lr / (double)nr : 0;
        st->kl = kl;
    }
    return ft_mean(ctx, ft_sub(ctx, w, ft_mul(ctx, w, ft_sigmoid(ctx, x))));
}

/* ============================================================================================
   [train] learning-rate schedules, checkpoints, plots
   ============================================================================================ */

/* Hugging Face's schedules: a linear warmup from 0 over `warmup` steps, then constant, linear
   decay to 0, or a half cosine to min_ratio * lr, reaching the end at step `total`. */
FT_API float ft_lr_at(ft_sched_kind kind, float lr, int64_t step, int64_t warmup, int64_t total, float min_ratio) {
    double progress;
    if (warmup > 0 && step < warmup) return lr * (float)step / (float)warmup;
    if (kind == FT_SCHED_CONSTANT || total <= warmup) return lr;
    progress = (double)(step - warmup) / (double)(total - warmup);
    if (progress > 1) progress = 1;
    if (kind == FT_SCHED_LINEAR) return lr * (float)(1.0 - progress);
    return lr * (float)(min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + cos(3.14159265358979323846 * progress)));
}

/* ---- checkpoints: a GGUF with every parameter, both moments, the RNG and the run state,
   written atomically; loading checks every name and shape ---------------------------------------- */
FT_API ft_result ft_checkpoint_save(const char *path, const ft_params *P, const ft_optim *o, const ft_rng *rng, const ft_train_state *st) {
    ft_gguf_writer *w; ft_result r; int i, k; char name[300];
    if ((r = ft_gguf_writer_init(&w)) != FT_OK) return r;
    ft_gguf_set_str(w, "general.type", "finetune.checkpoint");
    ft_gguf_set_int(w, "ft.checkpoint.version", FT_GGUF_UINT32, 1);
    ft_gguf_set_int(w, "ft.step", FT_GGUF_INT64, st->step);
    ft_gguf_set_int(w, "ft.epoch", FT_GGUF_INT64, st->epoch);
    ft_gguf_set_int(w, "ft.data.pos", FT_GGUF_INT64, st->data_pos);
    ft_gguf_set_int(w, "ft.data.seed", FT_GGUF_UINT64, (int64_t)st->data_seed);
    ft_gguf_set_float(w, "ft.tokens", FT_GGUF_FLOAT64, st->tokens);
    for (i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "ft.objective.%d", i);
        ft_gguf_set_float(w, name, FT_GGUF_FLOAT64, st->obj[i]);
    }
    if (rng) { ft_gguf_set_int(w, "ft.rng.0", FT_GGUF_UINT64, (int64_t)rng->s[0]); ft_gguf_set_int(w, "ft.rng.1", FT_GGUF_UINT64, (int64_t)rng->s[1]); }
    if (o) ft_gguf_set_int(w, "ft.optim.t", FT_GGUF_INT64, o->t);
    for (i = 0; i < P->n && r == FT_OK; i++) {
        const ft_tensor *t = P->t[i]; int64_t ne[4]; int d;
        for (d = 0; d < t->ndim; d++) ne[d] = t->shape[t->ndim - 1 - d];
        for (k = 0; k < (o ? 3 : 1) && r == FT_OK; k++) {
            const float *src = k == 0 ? FT__CAST(const float *, t->data) : (k == 1 ? o->m : o->v) + (t->grad - P->grad);
            snprintf(name, sizeof name, "%s%s", k == 0 ? "param." : k == 1 ? "adam.m." : "adam.v.", t->name);
            r = ft_gguf_add_tensor(w, name, FT_TYPE_F32, t->ndim, ne, src);
        }
    }
    if (r == FT_OK) r = ft_gguf_write(w, path);
    ft_gguf_writer_free(w);
    return r;
}

/* a checkpoint's tensor for t: F32 of t's shape, every value finite (and >= 0 for a second moment) */
static ft_result ft__checkpoint_check(const ft_gguf *g, const char *name, const ft_tensor *t, int nonnegative) {
    const ft_gguf_tensor *gt = ft_gguf_find_tensor(g, name); int d; int64_t j;
    if (!gt || gt->type != FT_TYPE_F32 || gt->n_dims != t->ndim) return ft_set_error(FT_ERR_SHAPE, "%s: tensor %s is missing or has another type or rank", ft_gguf_path(g), name);
    for (d = 0; d < t->ndim; d++)
        if (gt->ne[d] != t->shape[t->ndim - 1 - d]) return ft_set_error(FT_ERR_SHAPE, "%s: tensor %s has another shape", ft_gguf_path(g), name);
    for (j = 0; j < ft_numel(t); j++) {
        float x;
        memcpy(&x, FT__CAST(const char *, gt->data) + 4 * j, 4);
        if (!(fabsf(x) <= FLT_MAX) || (nonnegative && x < 0))
            return ft_set_error(FT_ERR_NUMERIC, "%s: tensor %s[%lld] is %g (offset %llu of the data; the file is damaged)", ft_gguf_path(g), name, (long long)j, (double)x,
                                (unsigned long long)(gt->offset + 4 * (uint64_t)j));
    }
    return FT_OK;
}
/* the run state: counts not negative, token count and objective state finite */
static ft_result ft__checkpoint_state_check(const ft_gguf *g) {
    static const char *ints[] = {"ft.step", "ft.epoch", "ft.data.pos", "ft.optim.t"};
    int i; int64_t v; double d; char name[32];
    for (i = 0; i < 4; i++)
        if (ft_gguf_get_int(g, ints[i], &v) && v < 0) return ft_set_error(FT_ERR_FORMAT, "%s: %s is %lld", ft_gguf_path(g), ints[i], (long long)v);
    for (i = 0; i < 5; i++) {
        if (i < 4) snprintf(name, sizeof name, "ft.objective.%d", i);
        else snprintf(name, sizeof name, "ft.tokens");
        if (ft_gguf_get_float(g, name, &d) && !(fabs(d) <= DBL_MAX)) return ft_set_error(FT_ERR_NUMERIC, "%s: %s is %g", ft_gguf_path(g), name, d);
    }
    return FT_OK;
}
FT_API ft_result ft_checkpoint_load(const char *path, ft_params *P, ft_optim *o, ft_rng *rng, ft_train_state *st) {
    ft_gguf *g; ft_result r; int i, k; int64_t v; char name[300]; ft_gguf_str type;
    if ((r = ft_gguf_open(&g, path)) != FT_OK) return r;
    if (!ft_gguf_get_str(g, "general.type", &type) || type.n != 19 || memcmp(type.s, "finetune.checkpoint", 19) != 0) {
        ft_gguf_close(g); return ft_set_error(FT_ERR_FORMAT, "%s: not a finetune.h checkpoint", path);
    }
    for (i = 0; i < P->n; i++)                          /* validate everything before changing anything */
        for (k = 0; k < (o ? 3 : 1); k++) {
            snprintf(name, sizeof name, "%s%s", k == 0 ? "param." : k == 1 ? "adam.m." : "adam.v.", P->t[i]->name);
            if ((r = ft__checkpoint_check(g, name, P->t[i], k == 2)) != FT_OK) { ft_gguf_close(g); return r; }
        }
    if ((r = ft__checkpoint_state_check(g)) != FT_OK) { ft_gguf_close(g); return r; }
    for (i = 0; i < P->n; i++)
        for (k = 0; k < (o ? 3 : 1); k++) {
            ft_tensor *t = P->t[i];
            float *dst = k == 0 ? FT__F(t) : (k == 1 ? o->m : o->v) + (t->grad - P->grad);
            snprintf(name, sizeof name, "%s%s", k == 0 ? "param." : k == 1 ? "adam.m." : "adam.v.", t->name);
            memcpy(dst, ft_gguf_find_tensor(g, name)->data, (size_t)ft_numel(t) * sizeof(float));
            if (k == 0) t->version++;
        }
    memset(st, 0, sizeof *st);
    if (ft_gguf_get_int(g, "ft.step", &v)) st->step = v;
    if (ft_gguf_get_int(g, "ft.epoch", &v)) st->epoch = v;
    if (ft_gguf_get_int(g, "ft.data.pos", &v)) st->data_pos = v;
    if (ft_gguf_get_int(g, "ft.data.seed", &v)) st->data_seed = (uint64_t)v;
    { double d; if (ft_gguf_get_float(g, "ft.tokens", &d)) st->tokens = d; }
    for (i = 0; i < 4; i++) {
        double d;
        snprintf(name, sizeof name, "ft.objective.%d", i);
        if (ft_gguf_get_float(g, name, &d)) st->obj[i] = d;
    }
    if (rng && ft_gguf_get_int(g, "ft.rng.0", &v)) { rng->s[0] = (uint64_t)v; if (ft_gguf_get_int(g, "ft.rng.1", &v)) rng->s[1] = (uint64_t)v; }
    if (o && ft_gguf_get_int(g, "ft.optim.t", &v)) o->t = v;
    ft_gguf_close(g);
    return FT_OK;
}

/* ---- batches: examples -> (B, T) ids with shifted targets -------------------------------------------
   Row r holds example order[r] (cut to T tokens) followed by padding; target[t] = ids[t+1] where
   that token carries loss, else -100. With packing, examples are laid end to end in each row,
   each with its own positions (from 0) and document id, so attention stays inside documents. */
static ft_result ft__batch_reserve(ft_batch_data *bd, int64_t B, int64_t T) {
    int64_t need = B * T;
    if (bd->cap < need) {
        int32_t *p = FT__CAST(int32_t *, FT_REALLOC(bd->ids, (size_t)need * 4 * sizeof(int32_t)));
        if (!p) return ft_set_error(FT_ERR_NOMEM, "batch: out of memory");
        bd->ids = p; bd->targets = p + need; bd->pos = p + 2 * need; bd->seg = p + 3 * need; bd->cap = need;
    }
    if (bd->row_cap < B) {
        int32_t *p = FT__CAST(int32_t *, FT_REALLOC(bd->len, (size_t)B * 2 * sizeof(int32_t)));
        if (!p) return ft_set_error(FT_ERR_NOMEM, "batch: out of memory");
        bd->len = p; bd->label = p + B; bd->row_cap = B;
    }
    memset(bd->label, 0, (size_t)B * sizeof(int32_t));
    bd->B = B; bd->T = T; bd->n_targets = 0; bd->n_tokens = 0; bd->used = 0;
    return FT_OK;
}
/* one unpacked row: ids[0..n) (target where loss[t+1]), then padding */
static void ft__batch_row(ft_batch_data *bd, int64_t r, const int32_t *ids, const unsigned char *loss, int64_t n, int32_t pad_id) {
    int64_t t, T = bd->T;
    int32_t *row = bd->ids + r * T, *tg = bd->targets + r * T;
    n = FT__MIN(n, T);
    for (t = 0; t < T; t++) {
        row[t] = t < n ? ids[t] : pad_id;
        tg[t] = t + 1 < n && loss[t + 1] ? ids[t + 1] : -100;
        bd->n_targets += tg[t] != -100;
        bd->pos[r * T + t] = (int32_t)t; bd->seg[r * T + t] = 0;
    }
    bd->len[r] = (int32_t)n; bd->n_tokens += n;
}

FT_API ft_result ft_batch_build(ft_batch_data *bd, const ft_dataset *d, const int64_t *order, int64_t n_order,
                                int64_t B, int64_t T, int pack, int32_t pad_id) {
    int64_t r, t, k = 0; ft_result res;
    if ((res = ft__batch_reserve(bd, B, T)) != FT_OK) return res;
    for (r = 0; r < B; r++) {
        int32_t *ids = bd->ids + r * T, *tg = bd->targets + r * T, *pos = bd->pos + r * T, *seg = bd->seg + r * T;
        int64_t fill = 0, doc = 0;
        for (t = 0; t < T; t++) { ids[t] = pad_id; tg[t] = -100; pos[t] = (int32_t)t; seg[t] = -1; }
        while (fill < T && k < n_order) {
            const ft_example *e = ft_dataset_get(d, order[k]);
            int64_t n = FT__MIN(e->n, T - fill), j;
            if (pack && fill > 0 && n < FT__MIN(e->n, 16)) break;      /* don't start a sliver */
            for (j = 0; j < n; j++) {
                ids[fill + j] = e->ids[j]; pos[fill + j] = (int32_t)j; seg[fill + j] = (int32_t)doc;
                if (j + 1 < n && e->loss[j + 1]) { tg[fill + j] = e->ids[j + 1]; bd->n_targets++; }
            }
            fill += n; bd->n_tokens += n; k++; doc++;
            if (!pack) break;
        }
        for (t = fill; t < T; t++) seg[t] = (int32_t)doc;           /* padding: its own document */
        bd->len[r] = (int32_t)fill;
    }
    bd->used = k;
    return FT_OK;
}
FT_API void ft_batch_data_free(ft_batch_data *bd) { FT_FREE(bd->ids); FT_FREE(bd->len); memset(bd, 0, sizeof *bd); }

/* preference pairs: rows 0..B-1 the chosen sequences (ids), rows B..2B-1 the rejected (ids2) */
FT_API ft_result ft_batch_build_pairs(ft_batch_data *bd, const ft_dataset *d, const int64_t *order, int64_t B, int64_t T, int32_t pad_id) {
    int64_t r; ft_result res;
    if ((res = ft__batch_reserve(bd, 2 * B, T)) != FT_OK) return res;
    for (r = 0; r < 2 * B; r++) {
        const ft_example *e = ft_dataset_get(d, order[r % B]);
        if (!e->ids2) return ft_set_error(FT_ERR_INVALID, "batch: example %lld has no rejected sequence", (long long)order[r % B]);
        if (r < B) ft__batch_row(bd, r, e->ids, e->loss, e->n, pad_id);
        else ft__batch_row(bd, r, e->ids2, e->loss2, e->n2, pad_id);
    }
    bd->used = B;
    return FT_OK;
}

FT_API ft_result ft_batch_build_kto(ft_batch_data *bd, const ft_dataset *d, const int64_t *order, int64_t B, int64_t T, int32_t pad_id) {
    int64_t r, Tmax = 1; ft_result res; int32_t *tmp; unsigned char *tl;
    for (r = 0; r < B; r++) {
        const ft_example *e = ft_dataset_get(d, order[r]), *o = ft_dataset_get(d, order[(r + B - 1) % B]);
        if (e->prompt_len <= 0 || e->prompt_len > e->n) return ft_set_error(FT_ERR_INVALID, "batch: example %lld has no prompt/completion split", (long long)order[r]);
        Tmax = FT__MAX(Tmax, FT__MAX(e->n, e->prompt_len + o->n - o->prompt_len));
    }
    T = FT__MIN(T, Tmax);
    if ((res = ft__batch_reserve(bd, 2 * B, T)) != FT_OK) return res;
    tmp = FT__CAST(int32_t *, FT_MALLOC((size_t)T * (sizeof(int32_t) + 1)));
    if (!tmp) return ft_set_error(FT_ERR_NOMEM, "batch: out of memory");
    tl = FT__CAST(unsigned char *, tmp + T);
    for (r = 0; r < B; r++) {
        const ft_example *e = ft_dataset_get(d, order[r]), *o = ft_dataset_get(d, order[(r + B - 1) % B]);
        int64_t n = FT__MIN(e->prompt_len, T), c = FT__MIN(o->n - o->prompt_len, T - n);
        ft__batch_row(bd, r, e->ids, e->loss, e->n, pad_id);
        bd->label[r] = e->label != 0;
        memcpy(tmp, e->ids, (size_t)n * sizeof(int32_t)); memset(tl, 0, (size_t)n);
        memcpy(tmp + n, o->ids + o->prompt_len, (size_t)c * sizeof(int32_t)); memcpy(tl + n, o->loss + o->prompt_len, (size_t)c);
        ft__batch_row(bd, B + r, tmp, tl, n + c, pad_id);
    }
    FT_FREE(tmp);
    bd->used = B;
    return FT_OK;
}

/* per-sequence log-probabilities of the target tokens of a batch (prompt and padding excluded):
   sum (B) and length-averaged mean (B), on the tape; counts (B) optional */
FT_API ft_result ft_sequence_logps(ft_ctx *ctx, ft_model *m, const ft_batch_data *bd, int packed,
                                   ft_tensor **sum, ft_tensor **mean, int64_t *counts) {
    ft_batch b; ft_tensor *lp, *inv; int64_t s2[2], r, t;
    memset(&b, 0, sizeof b);
    b.B = bd->B; b.T = bd->T; b.ids = bd->ids;
    if (packed) { b.pos = bd->pos; b.seg = bd->seg; }
    lp = ft_model_loss(ctx, m, ft_model_hidden(ctx, m, &b), bd->targets, 1);  /* (B*T), 0 off-target */
    s2[0] = bd->B; s2[1] = bd->T;
    *sum = ft_sum_rows(ctx, ft_reshape(ctx, lp, 2, s2));
    inv = ft_tensor_1d(ctx, bd->B);
    if (!*sum || !inv) return ft_set_error(ctx->status ? ctx->status : FT_ERR_NOMEM, "sequence log-probs: %s", ft_last_error());
    for (r = 0; r < bd->B; r++) {
        int64_t c = 0;
        for (t = 0; t < bd->T; t++) c += bd->targets[r * bd->T + t] != -100;
        FT__F(inv)[r] = c ? 1.0f / (float)c : 0.0f;
        if (counts) counts[r] = c;
    }
    if (mean) *mean = ft_mul(ctx, *sum, inv);
    return FT_OK;
}

/* mean cross-entropy of a batch, on the tape */
static ft_tensor *ft__batch_xent(ft_ctx *ctx, ft_model *m, const ft_batch_data *bd, int pack) {
    ft_batch b;
    memset(&b, 0, sizeof b);
    b.B = bd->B; b.T = bd->T; b.ids = bd->ids;
    if (pack) { b.pos = bd->pos; b.seg = bd->seg; }
    return ft_model_loss(ctx, m, ft_model_hidden(ctx, m, &b), bd->targets, 0);
}
static ft_result ft__batch_loss(ft_ctx *ctx, ft_model *m, const ft_batch_data *bd, int pack, double *loss) {
    ft_tensor *y = ft__batch_xent(ctx, m, bd, pack);
    if (!y) return ft_set_error(ctx->status, "eval: %s", ft_last_error());
    *loss = FT__F(y)[0];
    return FT_OK;
}

/* token-weighted mean loss over a whole dataset (no gradient) */
FT_API ft_result ft_eval_loss(ft_ctx *ctx, ft_model *m, const ft_dataset *d, int64_t batch, int64_t seq_len, double *mean_loss, int64_t *n_tokens) {
    ft_batch_data bd; int64_t i, *order, n = ft_dataset_size(d); double sum = 0, l = 0; int64_t cnt = 0; ft_result r = FT_OK;
    int old = ft_ctx_set_grad(ctx, 0);
    memset(&bd, 0, sizeof bd);
    order = FT__CAST(int64_t *, FT_MALLOC((size_t)n * sizeof(int64_t)));
    if (!order) return ft_set_error(FT_ERR_NOMEM, "eval: out of memory");
    for (i = 0; i < n; i++) order[i] = i;
    for (i = 0; i < n && r == FT_OK; ) {
        int64_t b = FT__MIN(batch, n - i), T = 1, j;
        for (j = 0; j < b; j++) T = FT__MAX(T, FT__MIN(ft_dataset_get(d, order[i + j])->n, seq_len));
        if ((r = ft_batch_build(&bd, d, order + i, b, b, T, 0, 0)) != FT_OK) break;
        ft_ctx_reset(ctx);
        if (bd.n_targets && (r = ft__batch_loss(ctx, m, &bd, 0, &l)) == FT_OK) { sum += l * (double)bd.n_targets; cnt += bd.n_targets; }
        i += bd.used;
    }
    ft_ctx_set_grad(ctx, old);
    FT_FREE(order); ft_batch_data_free(&bd);
    *mean_loss = cnt ? sum / (double)cnt : 0; if (n_tokens) *n_tokens = cnt;
    return r;
}

/* ---- multiple-choice evaluation, scored as lm-evaluation-harness scores it -------------------------
   An item is a context and its choices; each choice is the continuation " " + choice (lm-eval's
   target_delimiter), its score the summed log-probability of the continuation's tokens after the
   context. Tokens as lm-eval's HFLM makes them: the context's trailing whitespace moves to the
   continuation, context + continuation is tokenized whole (with the tokenizer's own BOS rule, as
   add_special_tokens does) and the continuation is what follows the context's own tokens; an empty
   context is the BOS (else EOS) token; inputs longer than seq_len + 1 lose tokens on the left.
   acc: the best-scored choice is the gold one; acc_norm: the best score per character of the
   choice (len() of the Python string: code points) is. */
typedef struct ft__mc_item { char *context; char **choices; int n_choices, gold; double *ll; } ft__mc_item;
struct ft_mc_set {
    int64_t n, cap;
    ft__mc_item *it;
    char *path;
};
FT_API void ft_mc_free(ft_mc_set *s) {
    int64_t i; int k;
    if (!s) return;
    for (i = 0; i < s->n; i++) {
        for (k = 0; k < s->it[i].n_choices; k++) FT_FREE(s->it[i].choices[k]);
        FT_FREE(s->it[i].choices); FT_FREE(s->it[i].context); FT_FREE(s->it[i].ll);
    }
    FT_FREE(s->it); FT_FREE(s->path); FT_FREE(s);
}
FT_API int64_t ft_mc_size(const ft_mc_set *s) { return s ? s->n : 0; }
FT_API const double *ft_mc_item(const ft_mc_set *s, int64_t i, int *n_choices, int *gold) {
    if (!s || i < 0 || i >= s->n) return NULL;
    if (n_choices) *n_choices = s->it[i].n_choices;
    if (gold) *gold = s->it[i].gold;
    return s->it[i].ll;
}
static char *ft__cat3(const char *a, const char *b, const char *c) {
    size_t na = strlen(a), nb = strlen(b), nc = strlen(c); char *d = FT__CAST(char *, FT_MALLOC(na + nb + nc + 1));
    if (d) { memcpy(d, a, na); memcpy(d + na, b, nb); memcpy(d + na + nb, c, nc); d[na + nb + nc] = 0; }
    return d;
}
/* one JSONL line in one of the layouts: {"context", "choices": [...], "gold"}; ARC's {"question",
   "choices": {"text": [...], "label": [...]}, "answerKey"}; PIQA's {"goal", "sol1", "sol2",
   "label"} (both as lm-eval's tasks render them: "Question: ...\nAnswer:") */
static ft_result ft__mc_parse(ft__mc_item *it, const ft_json *o, const char *where) {
    const ft_json *ctx = ft__json_value(o, "context"), *ch = ft__json_value(o, "choices"), *g = ft__json_value(o, "gold"), *txt = NULL;
    const ft_json *q = ft__json_value(o, "question"), *goal = ft__json_value(o, "goal"); int64_t k; double gold = -1;
    memset(it, 0, sizeof *it);
    if (ctx && ctx->kind == FT_JSON_STRING && ch && ch->kind == FT_JSON_ARRAY) {
        txt = ch;
        it->context = ft__strndup(ctx->s, (size_t)ctx->len);
        gold = g && g->kind == FT_JSON_NUMBER ? g->num : -1;
    } else if (q && q->kind == FT_JSON_STRING && ch && ch->kind == FT_JSON_OBJECT) {
        const ft_json *lab = ft__json_value(ch, "label"), *key = ft__json_value(o, "answerKey");
        txt = ft__json_value(ch, "text");
        it->context = ft__cat3("Question: ", q->s, "\nAnswer:");
        for (k = 0; lab && lab->kind == FT_JSON_ARRAY && key && key->kind == FT_JSON_STRING && k < lab->n; k++)
            if (ft_json_at(lab, k)->kind == FT_JSON_STRING && !strcmp(ft_json_at(lab, k)->s, key->s)) gold = (double)k;
    } else if (goal && goal->kind == FT_JSON_STRING) {
        const ft_json *s1 = ft__json_value(o, "sol1"), *s2 = ft__json_value(o, "sol2"), *lab = ft__json_value(o, "label");
        if (!s1 || !s2 || s1->kind != FT_JSON_STRING || s2->kind != FT_JSON_STRING) return ft_set_error(FT_ERR_FORMAT, "%s: PIQA layout needs \"sol1\" and \"sol2\" strings", where);
        it->context = ft__cat3("Question: ", goal->s, "\nAnswer:");
        it->n_choices = 2;
        it->choices = FT__CAST(char **, FT_MALLOC(2 * sizeof(char *)));
        if (it->choices) { it->choices[0] = ft__strndup(s1->s, (size_t)s1->len); it->choices[1] = ft__strndup(s2->s, (size_t)s2->len); }
        gold = lab && lab->kind == FT_JSON_NUMBER ? lab->num : -1;
    } else return ft_set_error(FT_ERR_FORMAT, "%s: not a multiple-choice item ({\"context\", \"choices\", \"gold\"}, ARC's {\"question\", \"choices\", \"answerKey\"} or PIQA's {\"goal\", \"sol1\", \"sol2\", \"label\"})", where);
    if (txt) {
        if (txt->kind != FT_JSON_ARRAY || txt->n < 1 || txt->n > 64) return ft_set_error(FT_ERR_FORMAT, "%s: \"choices\" must list 1 to 64 strings", where);
        it->n_choices = (int)txt->n;
        it->choices = FT__CAST(char **, FT_MALLOC((size_t)txt->n * sizeof(char *)));
        for (k = 0; it->choices && k < txt->n; k++) {
            const ft_json *c = ft_json_at(txt, k);
            if (c->kind != FT_JSON_STRING) { it->n_choices = (int)k; return ft_set_error(FT_ERR_FORMAT, "%s: choice %lld is not a string", where, (long long)k); }
            it->choices[k] = ft__strndup(c->s, (size_t)c->len);
        }
    }
    it->ll = FT__CAST(double *, FT_MALLOC((size_t)FT__MAX(it->n_choices, 1) * sizeof(double)));
    if (!it->context || !it->choices || !it->ll) return ft_set_error(FT_ERR_NOMEM, "%s: out of memory", where);
    for (k = 0; k < it->n_choices; k++) { if (!it->choices[k]) return ft_set_error(FT_ERR_NOMEM, "%s: out of memory", where); it->ll[k] = 0; }
    if (!(gold >= 0 && gold < it->n_choices && gold == floor(gold))) return ft_set_error(FT_ERR_FORMAT, "%s: the gold answer is missing or not one of the %d choices", where, it->n_choices);
    it->gold = (int)gold;
    return FT_OK;
}
FT_API ft_result ft_mc_load(ft_mc_set **out, const char *path) {
    ft_jsonl *f; ft_json_doc *doc = NULL; ft_mc_set *s; ft_result r; char where[1100];
    *out = NULL;
    if ((r = ft_jsonl_open(&f, path)) != FT_OK) return r;
    s = FT__CAST(ft_mc_set *, FT_MALLOC(sizeof *s));
    if (!s) { ft_jsonl_close(f); return ft_set_error(FT_ERR_NOMEM, "%s: out of memory", path); }
    memset(s, 0, sizeof *s);
    s->path = ft__strndup(path, strlen(path));
    while ((r = ft_jsonl_next(f, &doc)) == FT_OK && doc) {
        if (s->n == s->cap) {
            int64_t nc = s->cap ? 2 * s->cap : 64;
            ft__mc_item *ni = FT__CAST(ft__mc_item *, FT_REALLOC(s->it, (size_t)nc * sizeof *ni));
            if (!ni) { r = ft_set_error(FT_ERR_NOMEM, "%s: out of memory", path); break; }
            s->it = ni; s->cap = nc;
        }
        snprintf(where, sizeof where, "%s:%lld", path, (long long)ft_jsonl_line(f));
        r = ft__mc_parse(&s->it[s->n++], ft_json_root(doc), where);
        ft_json_free(doc); doc = NULL;
        if (r != FT_OK) break;
    }
    ft_json_free(doc);
    ft_jsonl_close(f);
    if (r == FT_OK && !s->n) r = ft_set_error(FT_ERR_FORMAT, "%s: no items", path);
    if (r != FT_OK) { ft_mc_free(s); return r; }
    *out = s;
    return FT_OK;
}
/* the context's and the whole sequence's tokens of one choice, as lm-eval's _encode_pair:
   *n_ctx of the *n tokens in ids (cap) are the context's */
static ft_result ft__mc_encode(const ft_tokenizer *t, const char *context, const char *choice, int32_t *ids, int64_t cap, int64_t *n, int64_t *n_ctx) {
    size_t lc = strlen(context), sp = 0; char *whole = ft__cat3(context, " ", choice);
    if (!whole) return ft_set_error(FT_ERR_NOMEM, "mc: out of memory");
    while (sp < lc && strchr(" \t\n\r\v\f", context[lc - 1 - sp])) sp++;     /* to the continuation */
    if (lc - sp == 0) {                                   /* no context: the BOS (or EOS) token  */
        ids[0] = ft_tokenizer_bos(t) >= 0 ? ft_tokenizer_bos(t) : ft_tokenizer_eos(t);
        *n_ctx = 1;
        *n = 1 + ft_tokenize(t, whole, -1, ids + 1, cap - 1, 0, 1);
    } else {
        *n_ctx = ft_tokenize(t, context, (int64_t)(lc - sp), NULL, 0, 1, 1);
        *n = ft_tokenize(t, whole, -1, ids, cap, 1, 1);
    }
    FT_FREE(whole);
    if (*n > cap || *n_ctx < 0 || *n < 0) return ft_set_error(FT_ERR_INVALID, "mc: an item of more than %lld tokens", (long long)cap);
    return FT_OK;
}
/* every item's choices scored (ft_mc_item has them after), acc and acc_norm over the set */
FT_API ft_result ft_eval_mc(ft_ctx *ctx, ft_model *m, ft_mc_set *s, int64_t seq_len, ft_eval_mc_result *res) {
    const ft_tokenizer *t = ft_model_tokenizer(m); int64_t i, cap = 1 << 16; int k, old; ft_result r = FT_OK;
    int32_t *ids = FT__CAST(int32_t *, FT_MALLOC((size_t)cap * sizeof(int32_t))), *in = NULL, *tg = NULL;
    memset(res, 0, sizeof *res);
    if (!t) { FT_FREE(ids); return ft_set_error(FT_ERR_STATE, "mc: the model has no tokenizer"); }
    if (seq_len < 1) seq_len = m->c.n_ctx_train;
    in = FT__CAST(int32_t *, FT_MALLOC((size_t)cap * sizeof(int32_t)));
    tg = FT__CAST(int32_t *, FT_MALLOC((size_t)cap * sizeof(int32_t)));
    if (!ids || !in || !tg) { FT_FREE(ids); FT_FREE(in); FT_FREE(tg); return ft_set_error(FT_ERR_NOMEM, "mc: out of memory"); }
    old = ft_ctx_set_grad(ctx, 0);
    for (i = 0; i < s->n && r == FT_OK; i++) {
        ft__mc_item *it = &s->it[i]; int best = 0, best_norm = 0; double bn = -HUGE_VAL;
        for (k = 0; k < it->n_choices && r == FT_OK; k++) {
            int64_t n = 0, n_ctx = 0, j, off, T; ft_batch b; ft_tensor *h, *lp; double sum = 0; uint32_t cp; size_t pos = 0, nch = 0;
            if ((r = ft__mc_encode(t, it->context, it->choices[k], ids, cap, &n, &n_ctx)) != FT_OK) break;
            off = FT__MAX(n - (seq_len + 1), 0);                /* left truncation                 */
            T = n - off - 1;
            if (T < 1 || n <= n_ctx) { r = ft_set_error(FT_ERR_INVALID, "%s: item %lld, choice %d: no continuation tokens", s->path, (long long)i, k); break; }
            for (j = 0; j < T; j++) { in[j] = ids[off + j]; tg[j] = off + j + 1 >= n_ctx ? ids[off + j + 1] : -100; }
            ft_ctx_reset(ctx);
            memset(&b, 0, sizeof b); b.B = 1; b.T = T; b.ids = in;
            h = ft_model_hidden(ctx, m, &b);
            lp = h ? ft_model_loss(ctx, m, h, tg, 1) : NULL;
            if (!lp) { r = ft_set_error(ctx->status ? ctx->status : FT_ERR_NOMEM, "mc: %s", ft_last_error()); break; }
            for (j = 0; j < T; j++) sum += FT__F(lp)[j];
            it->ll[k] = sum;
            while (pos < strlen(it->choices[k])) { cp = ft__utf8_next(FT__CAST(const unsigned char *, it->choices[k]), strlen(it->choices[k]), &pos); (void)cp; nch++; }
            if (sum > it->ll[best]) best = k;
            if (sum / (double)FT__MAX(nch, 1) > bn) { bn = sum / (double)FT__MAX(nch, 1); best_norm = k; }
        }
        res->acc += best == it->gold;
        res->acc_norm += best_norm == it->gold;
        res->n++;
    }
    ft_ctx_set_grad(ctx, old);
    FT_FREE(ids); FT_FREE(in); FT_FREE(tg);
    if (res->n) { res->acc /= (double)res->n; res->acc_norm /= (double)res->n; }
    return r;
}

/* reward model: score = w . h at each row's last real token, picked by a one-hot mask */
FT_API ft_result ft_sequence_rewards(ft_ctx *ctx, ft_model *m, const ft_batch_data *bd, ft_tensor **rewards) {
    ft_batch b; ft_tensor *h, *sc, *pick; int64_t s2[2], r;
    if (!m->peft || !m->peft->score) return ft_set_error(FT_ERR_STATE, "rewards: the model has no reward head (ft_lora_opts.reward_head)");
    memset(&b, 0, sizeof b);
    b.B = bd->B; b.T = bd->T; b.ids = bd->ids;
    h = ft_model_hidden(ctx, m, &b);                                      /* (B*T, d) */
    sc = ft_matmul(ctx, h, m->peft->score, 0, 1);                         /* (B*T, 1) */
    pick = ft_tensor_2d(ctx, bd->B, bd->T);
    if (!sc || !pick) return ft_set_error(ctx->status ? ctx->status : FT_ERR_NOMEM, "rewards: %s", ft_last_error());
    memset(pick->data, 0, (size_t)(bd->B * bd->T) * sizeof(float));
    for (r = 0; r < bd->B; r++) FT__F(pick)[r * bd->T + FT__MAX(bd->len[r], 1) - 1] = 1.0f;
    s2[0] = bd->B; s2[1] = bd->T;
    *rewards = ft_sum_rows(ctx, ft_mul(ctx, ft_reshape(ctx, sc, 2, s2), pick));
    return *rewards ? FT_OK : ft_set_error(ctx->status, "rewards: %s", ft_last_error());
}

static void ft__shuffle(int64_t *a, int64_t n, uint64_t seed) {
    ft_rng r; int64_t i;
    ft_rng_seed(&r, seed);
    for (i = 0; i < n; i++) a[i] = i;
    for (i = n - 1; i > 0; i--) { int64_t j = (int64_t)(ft_rng_u64(&r) % (uint64_t)(i + 1)), t = a[i]; a[i] = a[j]; a[j] = t; }
}

/* ---- the objective table: one row per ft_objective, in the enum's order ------------------------------
   A row: its name, how a micro-batch is made, the examples it reads, whether it needs the
   reference, whether its pairs are compared by per-token means, its defaults (lr, beta, gamma,
   label smoothing), its pairwise loss, what it logs. A new pairwise loss is one row here and one
   function above; ft_train_opts.custom takes a row of your own. */
#define FT__PAIR_METRICS "rewards/chosen,rewards/rejected,rewards/margins,rewards/accuracies,logps/chosen,logps/rejected"
#define FT__RL_METRICS "reward,reward_std,kl,completion_length"
#define FT__DPO_ROW(nm, avg, ls, fn, about) \
    {nm, FT_KIND_PAIRS, FT_DATA_PREFERENCE, 1, avg, 5e-5f, 0.1f, 0, ls, fn, FT__PAIR_METRICS, about, 0}
static const ft_objective_def ft__objectives[] = {
    {"sft", FT_KIND_TOKENS, FT_DATA_AUTO, 0, 0, 2e-4f, 0, 0, 0, NULL, "loss", "supervised fine-tuning: cross-entropy on the answer tokens", 0},
    {"cpt", FT_KIND_TOKENS, FT_DATA_TEXT, 0, 0, 2e-4f, 0, 0, 0, NULL, "loss", "continued pretraining: cross-entropy on every token, packed rows", 0},
    FT__DPO_ROW("dpo", 0, 0, ft__loss_dpo, "DPO: -logsig(b z); with label smoothing, cDPO"),
    FT__DPO_ROW("ipo", 1, 0, ft__loss_ipo, "IPO: (z - 1/(2b))^2 on per-token mean log-probs"),
    FT__DPO_ROW("hinge", 0, 0, ft__loss_hinge, "SLiC's hinge: relu(1 - b z)"),
    FT__DPO_ROW("robust", 0, 0, ft__loss_robust, "robust DPO: unbiased under a label-noise rate (label smoothing)"),
    FT__DPO_ROW("exo_pair", 0, 1e-3f, ft__loss_exo_pair, "EXO: reverse KL to the (1-e, e) preference"),
    FT__DPO_ROW("nca_pair", 0, 0, ft__loss_nca_pair, "NCA: absolute likelihoods of chosen and rejected"),
    FT__DPO_ROW("bco_pair", 0, 0, ft__loss_bco_pair, "BCO: a binary classifier of chosen against rejected"),
    FT__DPO_ROW("sppo_hard", 0, 0, ft__loss_sppo_hard, "SPPO with hard labels: squared log-ratio targets +-1/(2b)"),
    FT__DPO_ROW("aot", 0, 0, ft__loss_aot, "AOT: sorted policy margins against sorted reference margins"),
    FT__DPO_ROW("aot_unpaired", 0, 0, ft__loss_aot_unpaired, "AOT unpaired: sorted chosen against sorted rejected log-ratios"),
    FT__DPO_ROW("apo_zero", 0, 0, ft__loss_apo_zero, "APO-zero: chosen up, rejected down"),
    FT__DPO_ROW("apo_down", 0, 0, ft__loss_apo_down, "APO-down: both down, rejected more"),
    FT__DPO_ROW("discopop", 0, 0, ft__loss_discopop, "DiscoPOP: logistic and exponential blended by the margin"),
    FT__DPO_ROW("sigmoid_norm", 1, 0, ft__loss_sigmoid_norm, "DPO on per-token mean log-probs"),
    {"simpo", FT_KIND_PAIRS, FT_DATA_PREFERENCE, 0, 1, 5e-5f, 2.0f, 0.5f, 0, ft__loss_simpo, FT__PAIR_METRICS,
     "SimPO: reference-free, per-token means with a margin gamma", 0},
    {"orpo", FT_KIND_PAIRS, FT_DATA_PREFERENCE, 0, 1, 5e-5f, 0.1f, 0, 0, ft__loss_orpo, FT__PAIR_METRICS ",log_odds_ratio,log_odds_chosen",
     "ORPO: the chosen NLL plus an odds-ratio term, no reference", 0},
    {"kto", FT_KIND_KTO, FT_DATA_KTO, 1, 0, 5e-5f, 0.1f, 0, 0, NULL, FT__PAIR_METRICS ",kl", "KTO: unpaired desirable / undesirable completions", 0},
    {"rm", FT_KIND_SCORES, FT_DATA_PREFERENCE, 0, 0, 5e-5f, 0, 0, 0, NULL, FT__PAIR_METRICS, "a reward model: Bradley-Terry on a scalar head", 1},
    {"grpo", FT_KIND_ROLLOUTS, FT_DATA_PROMPT, 1, 0, 1e-5f, 0, 0, 0, NULL, FT__RL_METRICS ",clip_ratio/region_mean,frac_reward_zero_std",
     "GRPO: group-normalised rewards of sampled completions, clipped ratio", 0},
    {"ppo", FT_KIND_ROLLOUTS, FT_DATA_PROMPT, 1, 0, 1e-5f, 0, 0, 0, NULL, FT__RL_METRICS ",pg_loss,vf_loss,pg_clipfrac,objective/entropy,objective/rlhf_reward",
     "PPO: a value head, GAE, clipped policy and value losses", 1},
};
typedef char ft__objectives_fit_the_enum[sizeof ft__objectives / sizeof ft__objectives[0] == FT_OBJ_COUNT ? 1 : -1];

FT_API const ft_objective_def *ft_objective_get(ft_objective id) {
    return (int)id >= 0 && id < FT_OBJ_COUNT ? &ft__objectives[id] : NULL;
}
FT_API const char *ft_objective_name(ft_objective id) {
    return (int)id >= 0 && id < FT_OBJ_COUNT ? ft__objectives[id].name : "?";
}
FT_API int ft_objective_parse(const char *name, ft_objective *out) {
    int v;
    if (strcmp(name, "sigmoid") == 0) name = "dpo";             /* TRL's loss_type name        */
    if (strcmp(name, "aot_pair") == 0) name = "aot_unpaired";   /* its name before TRL 1.x     */
    if (!ft_enum_parse(FT_ENUM_OBJECTIVE, name, &v)) return 0;
    *out = (ft_objective)v;
    return 1;
}

FT_API ft_train_opts ft_train_opts_default(ft_objective objective) {
    ft_train_opts o;
    const ft_objective_def *d = ft_objective_get(objective);
    memset(&o, 0, sizeof o);
    if (!d) d = &ft__objectives[FT_OBJ_SFT];
    o.objective = objective;
    o.beta = d->beta; o.gamma = d->gamma; o.label_smoothing = d->label_smoothing; o.lr = d->lr;
    o.tau = 0.05f; o.desirable_weight = 1.0f; o.undesirable_weight = 1.0f;
    o.epochs = 1; o.batch = 4; o.seq_len = 512; o.grad_accum = 1;
    o.pack = d->kind == FT_KIND_TOKENS && d->data == FT_DATA_TEXT;
    o.sched = FT_SCHED_COSINE; o.max_grad_norm = 1.0f; o.seed = 1; o.save_every = 50;
    o.optim = ft_optim_opts_default();
    o.rl.prompts = 4; o.rl.group = objective == FT_OBJ_PPO ? 1 : 4; o.rl.max_new = 64;
    o.rl.sample.temperature = 1.0f; o.rl.iterations = objective == FT_OBJ_PPO ? 4 : 1;
    o.rl.grpo.epsilon = 0.2f; o.rl.grpo.agg = FT_GRPO_AGG_DAPO;
    o.rl.ppo.kl_coef = 0.05f; o.rl.ppo.gamma = 1.0f; o.rl.ppo.lam = 0.95f; o.rl.ppo.cliprange = 0.2f;
    o.rl.ppo.cliprange_value = 0.2f; o.rl.ppo.vf_coef = 0.1f; o.rl.ppo.kl_horizon = 10000.0f;
    o.router_aux_coef = -1.0f;
    o.from_default = 1;
    return o;
}

/* a zero field takes the default where zero is no choice (a rate, a count, a weight); where it is
   one (gamma, label smoothing, kl_coef) only in options that did not start from the defaults */
static void ft__train_fill(ft_train_opts *o, const ft_objective_def *d, int64_t n) {
    ft_train_opts z = ft_train_opts_default(o->objective);
    int zero_is_default = !o->from_default;
    if (o->lr <= 0) o->lr = o->custom ? d->lr : z.lr;
    if (o->beta <= 0) o->beta = d->beta > 0 ? d->beta : 0.1f;
    if (o->gamma == 0 && zero_is_default) o->gamma = d->gamma;
    if (o->label_smoothing == 0 && zero_is_default) o->label_smoothing = d->label_smoothing;
    if (o->tau <= 0) o->tau = z.tau;
    if (o->desirable_weight <= 0) o->desirable_weight = 1.0f;
    if (o->undesirable_weight <= 0) o->undesirable_weight = 1.0f;
    if (o->batch <= 0) o->batch = z.batch;
    if (o->seq_len <= 0) o->seq_len = z.seq_len;
    if (o->grad_accum <= 0) o->grad_accum = 1;
    if (o->rl.prompts <= 0) o->rl.prompts = z.rl.prompts;
    if (o->rl.group <= 0 || o->objective == FT_OBJ_PPO) o->rl.group = z.rl.group;
    if (o->rl.max_new <= 0) o->rl.max_new = z.rl.max_new;
    if (o->rl.iterations <= 0) o->rl.iterations = z.rl.iterations;
    if (o->rl.sample.temperature <= 0) o->rl.sample.temperature = 1.0f;
    if (o->rl.grpo.epsilon <= 0) o->rl.grpo.epsilon = 0.2f;
    if (o->rl.grpo.max_completion_len <= 0) o->rl.grpo.max_completion_len = o->rl.max_new;
    if (o->rl.ppo.kl_coef == 0 && zero_is_default) o->rl.ppo.kl_coef = z.rl.ppo.kl_coef;
    if (o->rl.ppo.gamma <= 0) o->rl.ppo.gamma = 1.0f;
    if (o->rl.ppo.lam <= 0) o->rl.ppo.lam = z.rl.ppo.lam;
    if (o->rl.ppo.cliprange <= 0) o->rl.ppo.cliprange = z.rl.ppo.cliprange;
    if (o->rl.ppo.cliprange_value <= 0) o->rl.ppo.cliprange_value = z.rl.ppo.cliprange_value;
    if (o->rl.ppo.vf_coef <= 0) o->rl.ppo.vf_coef = z.rl.ppo.vf_coef;
    if (o->rl.ppo.kl_horizon <= 0) o->rl.ppo.kl_horizon = z.rl.ppo.kl_horizon;
    if (o->steps <= 0) {                              /* epochs over the data */
        int64_t per_step = d->kind == FT_KIND_ROLLOUTS ? o->rl.prompts : o->batch;
        per_step *= o->grad_accum;
        o->steps = (o->epochs > 0 ? o->epochs : 1) * ((n + per_step - 1) / per_step);
    }
}

/* ---- the training loop's state, shared with the micro-batch makers --------------------------------- */
typedef struct ft__rl_buf ft__rl_buf;
typedef struct ft__trainer {
    ft_ctx *ctx; ft_model *m; ft_params *P; const ft_dataset *data;
    ft_train_opts o;                /* with its defaults filled in                                 */
    const ft_objective_def *def;
    ft_optim *opt;
    ft_batch_data bd;
    int64_t *order, n;              /* the data order of the current epoch                         */
    ft_train_state st;
    int64_t first_step;
    double t_start, t_window, tok_window;
    int64_t step_tokens;            /* this step's                                                 */
    ft_pref_stats pref;             /* this step's (last micro-batch)                             */
    ft_rl_stats rl;
    ft__rl_buf *ro;                 /* rollouts: one batch per micro-batch slot, reused for
                                       rl.iterations steps                                        */
    float moe_aux, moe_z, *moe_load; /* the router losses and load of the last micro-batch         */
} ft__trainer;

/* the next examples of the data order, `want` of them or as many as the epoch has left; a new
   shuffled epoch when it has none left (exact: fewer than `want`) */
static const int64_t *ft__take(ft__trainer *t, int64_t want, int exact, int64_t *got) {
    if (t->st.data_pos >= t->n || (exact && t->st.data_pos + want > t->n)) {
        t->st.epoch++;
        t->st.data_pos = 0;
        ft__shuffle(t->order, t->n, t->st.data_seed + (uint64_t)t->st.epoch * 0x9e3779b97f4a7c15ull);
    }
    *got = FT__MIN(want, t->n - t->st.data_pos);
    return t->order + t->st.data_pos;
}

/* the loss (1) of a micro-batch: its value (the router losses of a mixture of experts added), the
   NaN guard, its backward scaled by 1/grad_accum */
static ft_result ft__micro_backward(ft__trainer *t, ft_tensor *l, float scale, double *loss) {
    ft_ctx *ctx = t->ctx;
    if (l && t->m && t->m->c.n_expert) {
        ft_tensor *rl = ft_model_router_loss(ctx, t->m, t->o.router_aux_coef, t->o.router_z_coef, &t->moe_aux, &t->moe_z, t->moe_load);
        if (rl) l = ft_add(ctx, l, rl);
        else if (ctx->status != FT_OK) l = NULL;
    }
    if (!l) return ft_set_error(ctx->status ? ctx->status : FT_ERR_NOMEM, "train: %s", ft_last_error());
    *loss = FT__F(l)[0];
    if (!isfinite(FT__F(l)[0])) return ft_set_error(FT_ERR_NUMERIC, "train: the loss is %g", (double)FT__F(l)[0]);
    return ft_backward_from(ctx, l, &scale);
}

/* rows of `batch` examples (or packed rows of seq_len), next-token cross-entropy */
static ft_result ft__micro_tokens(ft__trainer *t, int slot, float scale, double *loss) {
    int64_t b, T = 1, j;
    const int64_t *ord = ft__take(t, t->o.batch, 0, &b);
    ft_result r;
    (void)slot;
    if (t->o.pack) T = t->o.seq_len;
    else for (j = 0; j < b; j++) T = FT__MAX(T, FT__MIN(ft_dataset_get(t->data, ord[j])->n, t->o.seq_len));
    r = ft_batch_build(&t->bd, t->data, ord, t->n - t->st.data_pos, t->o.pack ? t->o.batch : b, T, t->o.pack, 0);
    if (r != FT_OK) return r;
    t->st.data_pos += t->bd.used;
    t->step_tokens += t->bd.n_tokens;
    ft_ctx_reset(t->ctx);
    return ft__micro_backward(t, ft__batch_xent(t->ctx, t->m, &t->bd, t->o.pack), scale, loss);
}

/* the next preference pairs as rows: chosen 0..b-1, rejected b..2b-1 */
static ft_result ft__pair_rows(ft__trainer *t, int64_t *b) {
    int64_t T = 1, j;
    const int64_t *ord = ft__take(t, t->o.batch, 0, b);
    ft_result r;
    for (j = 0; j < *b; j++) {
        const ft_example *e = ft_dataset_get(t->data, ord[j]);
        T = FT__MAX(T, FT__MIN(FT__MAX(e->n, e->n2), t->o.seq_len));
    }
    if ((r = ft_batch_build_pairs(&t->bd, t->data, ord, *b, T, 0)) != FT_OK) return r;
    t->st.data_pos += *b;
    t->step_tokens += t->bd.n_tokens;
    ft_ctx_reset(t->ctx);
    return FT_OK;
}

/* the reference's log-probs of the rows: the same model with the adapter off, no gradient */
static ft_result ft__reference_logps(ft__trainer *t, const ft_batch_data *bd, ft_tensor **sum, ft_tensor **mean) {
    ft_result r;
    int old;
    if (!t->m->peft) return ft_set_error(FT_ERR_STATE, "train: %s needs an adapter (the reference is the model with it off)", t->def->name);
    old = ft_ctx_set_grad(t->ctx, 0);
    ft_peft_set_enabled(t->m->peft, 0);
    r = ft_sequence_logps(t->ctx, t->m, bd, 0, sum, mean, NULL);
    ft_peft_set_enabled(t->m->peft, 1);
    ft_ctx_set_grad(t->ctx, old);
    return r;
}

/* pairs: the policy's (and the reference's) log-probs of chosen and rejected -> the row's loss */
static ft_result ft__micro_pairs(ft__trainer *t, int slot, float scale, double *loss) {
    ft_ctx *ctx = t->ctx; ft_pair_logps lp; ft_tensor *sum, *mean, *rs, *rm, *l;
    int64_t b, i, tot = 0, *cnt; ft_result r; int avg = t->def->averaged;
    (void)slot;
    if ((r = ft__pair_rows(t, &b)) != FT_OK) return r;
    cnt = FT__CAST(int64_t *, ft__arena_alloc(ctx, (size_t)(2 * b) * sizeof(int64_t)));
    if (!cnt) return ft_set_error(FT_ERR_NOMEM, "train: arena out of memory");
    if ((r = ft_sequence_logps(ctx, t->m, &t->bd, 0, &sum, &mean, cnt)) != FT_OK) return r;
    memset(&lp, 0, sizeof lp);
    lp.chosen = ft_view_rows(ctx, avg ? mean : sum, 0, b);
    lp.rejected = ft_view_rows(ctx, avg ? mean : sum, b, b);
    lp.len_chosen = cnt;
    lp.len_rejected = cnt + b;
    for (i = 0; i < b; i++) tot += cnt[i];
    lp.nll = ft_scale(ctx, ft_sum(ctx, ft_view_rows(ctx, sum, 0, b)), -1.0f / (float)FT__MAX(tot, 1));
    if (t->def->reference) {
        if ((r = ft__reference_logps(t, &t->bd, &rs, &rm)) != FT_OK) return r;
        lp.ref_chosen = ft_view_rows(ctx, avg ? rm : rs, 0, b);
        lp.ref_rejected = ft_view_rows(ctx, avg ? rm : rs, b, b);
    }
    l = t->def->pair_loss(ctx, &lp, &t->o, &t->pref);
    return ft__micro_backward(t, l, scale, loss);
}

/* a reward model: Bradley-Terry on the head's scores of chosen and rejected */
static ft_result ft__micro_scores(ft__trainer *t, int slot, float scale, double *loss) {
    ft_tensor *rw, *l; int64_t b; ft_result r;
    (void)slot;
    if ((r = ft__pair_rows(t, &b)) != FT_OK) return r;
    if ((r = ft_sequence_rewards(t->ctx, t->m, &t->bd, &rw)) != FT_OK) return r;
    l = ft_rm_loss(t->ctx, ft_view_rows(t->ctx, rw, 0, b), ft_view_rows(t->ctx, rw, b, b), NULL, t->o.rm_center, &t->pref);
    return ft__micro_backward(t, l, scale, loss);
}

/* KTO (rows from ft_batch_build_kto): the policy's log-probs of the real pairs on the tape; the
   mismatched pairs under the policy and everything under the reference without gradient */
static ft_result ft__micro_kto(ft__trainer *t, int slot, float scale, double *loss) {
    ft_ctx *ctx = t->ctx; ft_batch_data half; ft_tensor *lp, *klp, *ref, *l; int64_t B, i; int old, *lab; ft_result r;
    const int64_t *ord = ft__take(t, t->o.batch, 0, &B);
    (void)slot;
    if ((r = ft_batch_build_kto(&t->bd, t->data, ord, B, t->o.seq_len, 0)) != FT_OK) return r;
    t->st.data_pos += B;
    t->step_tokens += t->bd.n_tokens;
    ft_ctx_reset(ctx);
    lab = FT__CAST(int *, ft__arena_alloc(ctx, (size_t)B * sizeof(int)));
    if (!lab) return ft_set_error(FT_ERR_NOMEM, "train: arena out of memory");
    for (i = 0; i < B; i++) lab[i] = t->bd.label[i];
    half = t->bd; half.B = B;                                 /* rows 0..B-1: the real pairs */
    if ((r = ft_sequence_logps(ctx, t->m, &half, 0, &lp, NULL, NULL)) != FT_OK) return r;
    old = ft_ctx_set_grad(ctx, 0);
    half.ids = t->bd.ids + B * t->bd.T; half.targets = t->bd.targets + B * t->bd.T;
    r = ft_sequence_logps(ctx, t->m, &half, 0, &klp, NULL, NULL);
    ft_ctx_set_grad(ctx, old);
    if (r == FT_OK) r = ft__reference_logps(t, &t->bd, &ref, NULL);
    if (r != FT_OK) return r;
    l = ft_kto_loss(ctx, lp, ft_view_rows(ctx, ref, 0, B), klp, ft_view_rows(ctx, ref, B, B), lab, t->o.beta,
                    t->o.desirable_weight, t->o.undesirable_weight, &t->pref);
    return ft__micro_backward(t, l, scale, loss);
}
/* held-out preference accuracy: the fraction of pairs where the chosen answer wins, and the mean
   margin. implicit 1: by DPO's (and KTO's) implicit reward, beta times the policy - reference
   log-ratio (the reference: the adapter off); 2: by beta times the policy's length-averaged
   log-likelihood (the reward of SimPO and ORPO); 0: by its summed log-likelihood (times beta) */
FT_API ft_result ft_eval_preference(ft_ctx *ctx, ft_model *m, const ft_dataset *d, int64_t batch, int64_t seq_len, float beta,
                                    int implicit, double *accuracy, double *margin) {
    ft_batch_data bd; int64_t i, j, b = 0, n = ft_dataset_size(d), *order, good = 0; double msum = 0; ft_result r = FT_OK;
    int old = ft_ctx_set_grad(ctx, 0), ref = implicit == 1 && m->peft && ft_peft_enabled(m->peft);
    if (implicit == 1 && !ref) {           /* no adapter on: the policy is the reference, every reward 0 */
        ft_ctx_set_grad(ctx, old);
        *accuracy = 0; if (margin) *margin = 0;
        return FT_OK;
    }
    memset(&bd, 0, sizeof bd);
    order = FT__CAST(int64_t *, FT_MALLOC((size_t)FT__MAX(n, 1) * sizeof(int64_t)));
    if (!order) { ft_ctx_set_grad(ctx, old); return ft_set_error(FT_ERR_NOMEM, "eval: out of memory"); }
    for (i = 0; i < n; i++) order[i] = i;
    for (i = 0; i < n && r == FT_OK; i += b) {
        int64_t T = 1; ft_tensor *s, *mean, *rs = NULL;
        float pol[512], refv[512];
        b = FT__MIN(FT__MIN(FT__MAX(batch, 1), n - i), 256);
        for (j = 0; j < b; j++) { const ft_example *e = ft_dataset_get(d, order[i + j]); T = FT__MAX(T, FT__MIN(FT__MAX(e->n, e->n2), seq_len)); }
        if ((r = ft_batch_build_pairs(&bd, d, order + i, b, T, 0)) != FT_OK) break;
        ft_ctx_reset(ctx);
        if ((r = ft_sequence_logps(ctx, m, &bd, 0, &s, &mean, NULL)) != FT_OK) break;
        memcpy(pol, (implicit == 2 ? mean : s)->data, (size_t)(2 * b) * sizeof(float));
        if (ref) {
            ft_peft_set_enabled(m->peft, 0);
            r = ft_sequence_logps(ctx, m, &bd, 0, &rs, NULL, NULL);
            ft_peft_set_enabled(m->peft, 1);
            if (r != FT_OK) break;
            memcpy(refv, rs->data, (size_t)(2 * b) * sizeof(float));
        }
        for (j = 0; j < b; j++) {
            double mg = beta * ((pol[j] - (ref ? refv[j] : 0)) - (pol[b + j] - (ref ? refv[b + j] : 0)));
            good += mg > 0; msum += mg;
        }
    }
    ft_ctx_set_grad(ctx, old);
    FT_FREE(order); ft_batch_data_free(&bd);
    *accuracy = n ? (double)good / (double)n : 0; if (margin) *margin = n ? msum / (double)n : 0;
    return r;
}

FT_API ft_result ft_eval_reward(ft_ctx *ctx, ft_model *m, const ft_dataset *d, int64_t batch, int64_t seq_len,
                                double *accuracy, double *margin) {
    ft_batch_data bd; int64_t i, j, b = 0, n = ft_dataset_size(d), good = 0, *order; double msum = 0; ft_result r = FT_OK;
    int old = ft_ctx_set_grad(ctx, 0);
    memset(&bd, 0, sizeof bd);
    order = FT__CAST(int64_t *, FT_MALLOC((size_t)FT__MAX(n, 1) * sizeof(int64_t)));
    if (!order) { ft_ctx_set_grad(ctx, old); return ft_set_error(FT_ERR_NOMEM, "eval: out of memory"); }
    for (i = 0; i < n; i++) order[i] = i;
    for (i = 0; i < n && r == FT_OK; i += b) {
        int64_t T = 1; ft_tensor *rw;
        b = FT__MIN(FT__MAX(batch, 1), n - i);
        for (j = 0; j < b; j++) { const ft_example *e = ft_dataset_get(d, order[i + j]); T = FT__MAX(T, FT__MIN(FT__MAX(e->n, e->n2), seq_len)); }
        if ((r = ft_batch_build_pairs(&bd, d, order + i, b, T, 0)) != FT_OK) break;
        ft_ctx_reset(ctx);
        if ((r = ft_sequence_rewards(ctx, m, &bd, &rw)) != FT_OK) break;
        for (j = 0; j < b; j++) { double mg = (double)FT__F(rw)[j] - (double)FT__F(rw)[b + j]; good += mg > 0; msum += mg; }
    }
    ft_ctx_set_grad(ctx, old);
    FT_FREE(order); ft_batch_data_free(&bd);
    *accuracy = n ? (double)good / (double)n : 0; if (margin) *margin = n ? msum / (double)n : 0;
    return r;
}

/* ============================================================================================
   [rl] reinforcement learning from sampled completions (FT_NO_RL compiles it out): GRPO (Shao
   et al. 2024) and PPO (Ouyang et al. 2022) losses as TRL computes them (GRPO: trl 1.16
   GRPOTrainer; PPO: trl 1.9 experimental PPOTrainer), verifiable rewards with a small regex
   engine, rollouts with the KV cache, the rollout micro-batches of the training loop, and the
   greedy evaluation of a reward.
   ============================================================================================ */
#ifndef FT_NO_RL
FT_API void ft_grpo_advantages(const float *rewards, int64_t n_prompts, int64_t G, ft_adv_scale scale, float *adv, ft_rl_stats *st) {
    int64_t p, i, n = n_prompts * G, zero = 0; double all_m = 0, all_v = 0;
    for (i = 0; i < n; i++) all_m += rewards[i] / (double)n;
    for (i = 0; i < n; i++) all_v += (rewards[i] - all_m) * (rewards[i] - all_m);
    all_v = n > 1 ? sqrt(all_v / (double)(n - 1)) : 0;
    for (p = 0; p < n_prompts; p++) {
        const float *r = rewards + p * G; double m = 0, v = 0, sd;
        for (i = 0; i < G; i++) m += r[i] / (double)G;
        for (i = 0; i < G; i++) v += (r[i] - m) * (r[i] - m);
        sd = G > 1 ? sqrt(v / (double)(G - 1)) : 0;
        zero += sd == 0;
        for (i = 0; i < G; i++) {
            double a = r[i] - m;
            if (scale == FT_ADV_GROUP) a /= sd + 1e-4;
            else if (scale == FT_ADV_BATCH) a /= all_v + 1e-4;
            adv[p * G + i] = (float)a;
        }
    }
    if (scale == FT_ADV_BATCH) zero = all_v == 0 ? n_prompts : 0;     /* the std in use is the batch's */
    if (st) { st->reward = all_m; st->reward_std = all_v; st->frac_reward_zero_std = n_prompts ? (double)zero / (double)n_prompts : 0; }
}

static ft_tensor *ft__const_from(ft_ctx *ctx, const ft_tensor *like, const float *v) {
    ft_tensor *t = ft__tensor(ctx, FT_TYPE_F32, like->ndim, like->shape, NULL);
    if (t) memcpy(t->data, v, (size_t)ft_numel(t) * sizeof(float));
    return t;
}

FT_API ft_tensor *ft_grpo_loss(ft_ctx *ctx, ft_tensor *lp, const float *old, const float *ref, const float *adv,
                               const float *mask, const ft_grpo_opts *o, ft_rl_stats *st) {
    int64_t B, T, b, t; ft_tensor *oldt, *At, *Mt, *c, *l, *lm; float *a; double msum = 0;
    float eh = o->epsilon_high > 0 ? o->epsilon_high : o->epsilon;
    FT__IN(lp);
    if (lp->ndim != 2) return ft__fail(ctx, FT_ERR_SHAPE, "grpo loss: log-probs must be (B, T)");
    B = lp->shape[0]; T = lp->shape[1];
    oldt = ft__const_from(ctx, lp, old ? old : FT__F(lp));
    At = ft__const_from(ctx, lp, mask); Mt = ft__const_from(ctx, lp, mask);
    FT__IN(oldt); FT__IN(At); FT__IN(Mt);
    for (a = FT__F(At), b = 0; b < B; b++) for (t = 0; t < T; t++) a[b * T + t] = adv[b];
    for (b = 0; b < B * T; b++) msum += mask[b];
    c = ft_exp(ctx, ft_sub(ctx, lp, oldt));                               /* importance ratio */
    l = ft_scale(ctx, ft_minimum(ctx, ft_mul(ctx, c, At), ft_mul(ctx, ft_clamp(ctx, c, 1.0f - o->epsilon, 1.0f + eh), At)), -1.0f);
    if (o->beta != 0 && ref) {                          /* k3: exp(ref - lp) - (ref - lp) - 1 */
        ft_tensor *d = ft_sub(ctx, ft__const_from(ctx, lp, ref), lp);
        l = ft_add(ctx, l, ft_scale(ctx, ft_sub(ctx, ft_sub(ctx, ft_exp(ctx, d), d), ft__const(ctx, 1, 1.0f)), o->beta));
    }
    lm = ft_mul(ctx, l, Mt);
    FT__IN(lm);
    if (st) {                                           /* TRL's metrics from the values */
        double lo = 0, hi = 0, kl = 0, lo_min = 1e30, hi_max = -1e30;
        for (b = 0; b < B; b++) {
            double sl = 0, sh = 0, sm = 0;
            for (t = 0; t < T; t++) {
                int64_t i = b * T + t; double ci = FT__F(c)[i], m = mask[i];
                sl += m * (ci < 1.0 - o->epsilon && adv[b] < 0); sh += m * (ci > 1.0 + eh && adv[b] > 0); sm += m;
                if (o->beta != 0 && ref) { double d = (double)ref[i] - FT__F(lp)[i]; kl += m * (exp(d) - d - 1); }
            }
            lo += sl; hi += sh;
            lo_min = FT__MIN(lo_min, sl / FT__MAX(sm, 1)); hi_max = FT__MAX(hi_max, sh / FT__MAX(sm, 1));
        }
        msum = FT__MAX(msum, 1);
        st->clip_low = lo / msum; st->clip_high = hi / msum; st->clip_region = (lo + hi) / msum;
        st->clip_low_min = lo_min; st->clip_high_max = hi_max; st->kl = kl / msum;
    }
    switch (o->agg) {
    case FT_GRPO_AGG_GRPO: {                        /* mean over sequences of their token mean */
        ft_tensor *inv = ft_tensor_1d(ctx, B);
        FT__IN(inv);
        for (b = 0; b < B; b++) { double s = 0; for (t = 0; t < T; t++) s += mask[b * T + t]; FT__F(inv)[b] = 1.0f / (float)FT__MAX(s, 1.0); }
        return ft_mean(ctx, ft_mul(ctx, ft_sum_rows(ctx, lm), inv)); }
    case FT_GRPO_AGG_BNPO: { double s = 0; for (b = 0; b < B * T; b++) s += mask[b]; return ft_scale(ctx, ft_sum(ctx, lm), 1.0f / (float)FT__MAX(s, 1.0)); }
    case FT_GRPO_AGG_DR_GRPO: return ft_scale(ctx, ft_sum(ctx, lm), 1.0f / (float)(B * FT__MAX(o->max_completion_len, 1)));
    case FT_GRPO_AGG_DAPO: return ft_scale(ctx, ft_sum(ctx, lm), 1.0f / (float)FT__MAX(o->num_items, 1));
    default: return ft__fail(ctx, FT_ERR_INVALID, "grpo loss: aggregation %d", (int)o->agg);
    }
}

/* masked mean and (Bessel) variance, then (x - mean) / sqrt(var + 1e-8), as TRL's masked_whiten */
static void ft__masked_whiten(float *x, const unsigned char *skip, int64_t n, int shift_mean) {
    int64_t i; double m = 0, v = 0, k = 0, sd;
    for (i = 0; i < n; i++) if (!skip[i]) { m += x[i]; k++; }
    if (k == 0) return;
    m /= k;
    for (i = 0; i < n; i++) if (!skip[i]) v += (x[i] - m) * (x[i] - m);
    v /= k;
    if (k > 1) v *= k / (k - 1);
    sd = 1.0 / sqrt(v + 1e-8);
    for (i = 0; i < n; i++) x[i] = (float)((x[i] - m) * sd + (shift_mean ? 0 : m));
}

FT_API float ft_ppo_adapt_kl(float kl_coef, double kl, int64_t n, float target, float horizon) {
    double e = kl / target - 1;
    if (target <= 0 || horizon <= 0) return kl_coef;
    e = e < -0.2 ? -0.2 : e > 0.2 ? 0.2 : e;
    return (float)(kl_coef * (1 + e * (double)n / horizon));
}

FT_API void ft_ppo_prepare(ft_ppo_batch *b, const ft_ppo_opts *o, ft_rl_stats *st) {
    int64_t B = b->B, T = b->T, i, t; double kls = 0, ent = 0, nsr = 0, sc = 0;
    for (i = 0; i < B; i++) for (t = 0; t < T; t++) {
        int64_t k = i * T + t;
        b->pad[k] = t > b->seqlen[i]; b->pad_p1[k] = t > b->seqlen[i] + 1;
        if (b->pad[k]) { b->logprobs[k] = 1.0f; b->ref[k] = 1.0f; }       /* INVALID_LOGPROB */
        if (b->pad_p1[k]) b->values[k] = 0.0f;
    }
    for (i = 0; i < B; i++) {
        int64_t end = b->seqlen[i] + 1 < T ? b->seqlen[i] + 1 : b->seqlen[i];
        for (t = 0; t < T; t++) {
            int64_t k = i * T + t; double lr = (double)b->ref[k] - b->logprobs[k];
            b->kl[k] = (float)(o->kl_k3 ? exp(lr) - 1 - lr : -lr);
            b->rewards[k] = -o->kl_coef * b->kl[k];
            kls += b->kl[k]; ent -= b->logprobs[k]; nsr += b->rewards[k];
        }
        b->rewards[i * T + end] += b->scores[i];
        sc += b->scores[i];
    }
    if (o->whiten_rewards) {
        ft__masked_whiten(b->rewards, b->pad_p1, B * T, 0);
        for (i = 0; i < B * T; i++) if (b->pad_p1[i]) b->rewards[i] = 0;
    }
    for (i = 0; i < B; i++) {                                  /* GAE over all T positions */
        double last = 0;
        for (t = T - 1; t >= 0; t--) {
            int64_t k = i * T + t; double next = t + 1 < T ? b->values[k + 1] : 0.0;
            double delta = b->rewards[k] + o->gamma * next - b->values[k];
            last = delta + o->gamma * o->lam * last;
            b->advantages[k] = (float)last; b->returns[k] = (float)(last + b->values[k]);
        }
    }
    ft__masked_whiten(b->advantages, b->pad, B * T, 1);
    for (i = 0; i < B * T; i++) if (b->pad[i]) b->advantages[i] = 0;
    if (st) {
        st->kl = kls / (double)B; st->entropy = ent / (double)B; st->non_score_reward = nsr / (double)B;
        st->scores = sc / (double)B; st->rlhf_reward = st->scores + st->non_score_reward;
    }
}

FT_API ft_tensor *ft_ppo_loss(ft_ctx *ctx, ft_tensor *new_lp, ft_tensor *vpred, const ft_ppo_batch *b, const ft_ppo_opts *o, ft_rl_stats *st) {
    int64_t i, n = b->B * b->T; double np = 0, np1 = 0;
    ft_tensor *keep, *keep1, *old, *A, *V, *R, *diff, *ratio, *pg, *vp, *v1, *v2, *vf, *loss;
    float *k, *k1;
    FT__IN(new_lp); FT__IN(vpred);
    if (ft_numel(new_lp) != n || ft_numel(vpred) != n) return ft__fail(ctx, FT_ERR_SHAPE, "ppo loss: expected (%lld, %lld) log-probs and values", (long long)b->B, (long long)b->T);
    keep = ft__const_from(ctx, new_lp, b->logprobs); keep1 = ft__const_from(ctx, new_lp, b->logprobs);
    old = ft__const_from(ctx, new_lp, b->logprobs); A = ft__const_from(ctx, new_lp, b->advantages);
    V = ft__const_from(ctx, new_lp, b->values); R = ft__const_from(ctx, new_lp, b->returns);
    FT__IN(keep); FT__IN(keep1); FT__IN(old); FT__IN(A); FT__IN(V); FT__IN(R);
    for (k = FT__F(keep), k1 = FT__F(keep1), i = 0; i < n; i++) { k[i] = !b->pad[i]; k1[i] = !b->pad_p1[i]; np += k[i]; np1 += k1[i]; }
    /* new log-probs := old (both the 1.0 fill) at padding: the ratio is 1 there, its gradient 0 */
    diff = ft_mul(ctx, ft_sub(ctx, new_lp, old), keep);
    ratio = ft_exp(ctx, diff);
    pg = ft_maximum(ctx, ft_mul(ctx, ft_scale(ctx, A, -1.0f), ratio),
                    ft_mul(ctx, ft_scale(ctx, A, -1.0f), ft_clamp(ctx, ratio, 1.0f - o->cliprange, 1.0f + o->cliprange)));
    pg = ft_scale(ctx, ft_sum(ctx, ft_mul(ctx, pg, keep)), 1.0f / (float)FT__MAX(np, 1));
    vp = ft_mul(ctx, vpred, keep1);                                   /* vpred := 0 at pad_p1 */
    v1 = ft_sub(ctx, vp, R);
    v2 = ft_sub(ctx, ft_minimum(ctx, ft_maximum(ctx, vp, ft_add(ctx, V, ft__const(ctx, 1, -o->cliprange_value))),
                                ft_add(ctx, V, ft__const(ctx, 1, o->cliprange_value))), R);
    vf = ft_maximum(ctx, ft_mul(ctx, v1, v1), ft_mul(ctx, v2, v2));
    vf = ft_scale(ctx, ft_sum(ctx, ft_mul(ctx, vf, keep1)), 0.5f / (float)FT__MAX(np1, 1));
    loss = ft_add(ctx, pg, ft_scale(ctx, vf, o->vf_coef));
    FT__IN(loss);
    if (st) {
        double pgc = 0, vfc = 0, ak = 0, rm = 0;
        for (i = 0; i < n; i++) {
            double d = FT__F(diff)[i], r = FT__F(ratio)[i], a = b->advantages[i], rc = FT__MIN(FT__MAX(r, 1.0 - o->cliprange), 1.0 + o->cliprange);
            double v = FT__F(vp)[i], vc = FT__MIN(FT__MAX(v, (double)b->values[i] - o->cliprange_value), (double)b->values[i] + o->cliprange_value);
            double e1 = (v - b->returns[i]) * (v - b->returns[i]), e2 = (vc - b->returns[i]) * (vc - b->returns[i]);
            if (!b->pad[i]) pgc += -a * rc > -a * r;
            if (!b->pad_p1[i]) vfc += e2 > e1;
            ak += 0.5 * d * d / (double)n; rm += r / (double)n;
        }
        st->pg_loss = FT__F(pg)[0]; st->vf_loss = FT__F(vf)[0];
        st->pg_clipfrac = pgc / FT__MAX(np, 1); st->vf_clipfrac = vfc / FT__MAX(np1, 1); st->approxkl = ak; st->ratio_mean = rm;
    }
    return loss;
}

/* ---- a small regular-expression matcher for reward functions ---------------------------------------
   Syntax: literals, escapes, . [] [^] with ranges, \d \w \s \D \W \S, ( | ), * + ? {m} {m,} {m,n}
   (counts up to 1000) and ^ $, read as Python's re reads a bytes pattern without flags: . is any
   byte but \n, $ is the end or just before a final \n. Bytes, not code points.
   The pattern is parsed into nodes, compiled into a program of byte-set, split and jump
   instructions (Thompson 1968) and run as a Pike VM: the threads of every start position and every
   path through the pattern advance together, one byte at a time, each instruction at most once per
   byte. A search costs O(text bytes x program length) with no recursion, so nothing depends on
   depth or backtracking. A program over FT__RX_PROG instructions (counted repeats multiply) is
   refused as too large. */
enum { FT__RX_SET = 1, FT__RX_BOL, FT__RX_EOL, FT__RX_GROUP, FT__RX_ALT };
typedef struct ft__rx_node { int kind, min, max, child, next, alt; unsigned char set[32]; } ft__rx_node;
typedef struct ft__rx { ft__rx_node n[256]; int count, err; const char *p; } ft__rx;

static int ft__rx_new(ft__rx *r, int kind) {
    ft__rx_node *x;
    if (r->count == 256) { r->err = 1; return 0; }
    x = &r->n[r->count]; memset(x, 0, sizeof *x);
    x->kind = kind; x->min = x->max = 1; x->child = x->next = x->alt = -1;
    return r->count++;
}
static void ft__rx_set(unsigned char *set, int c) { set[(unsigned char)c >> 3] |= (unsigned char)(1u << (c & 7)); }
static void ft__rx_escape(unsigned char *set, int c) {               /* \d \w \s and literal escapes */
    int i, neg = c == 'D' || c == 'W' || c == 'S'; unsigned char s[32];
    memset(s, 0, 32);
    switch (c | 32) {
    case 'd': for (i = '0'; i <= '9'; i++) ft__rx_set(s, i); break;
    case 'w': for (i = 0; i < 256; i++) if ((i >= '0' && i <= '9') || ((i | 32) >= 'a' && (i | 32) <= 'z') || i == '_') ft__rx_set(s, i); break;
    case 's': ft__rx_set(s, ' '); ft__rx_set(s, '\t'); ft__rx_set(s, '\n'); ft__rx_set(s, '\r'); ft__rx_set(s, '\f'); ft__rx_set(s, '\v'); break;
    default: ft__rx_set(s, c == 'n' ? '\n' : c == 't' ? '\t' : c); neg = 0; break;
    }
    for (i = 0; i < 32; i++) set[i] |= neg ? (unsigned char)~s[i] : s[i];
}
static void ft__rx_class(ft__rx *r, unsigned char *set) {            /* [...] after the '[' */
    int neg = *r->p == '^', i; unsigned char s[32];
    memset(s, 0, 32);
    if (neg) r->p++;
    if (*r->p == ']') { ft__rx_set(s, ']'); r->p++; }
    while (*r->p && *r->p != ']') {
        int lo = (unsigned char)*r->p++, hi;
        if (lo == '\\' && *r->p) { ft__rx_escape(s, *r->p++); continue; }
        hi = lo;
        if (*r->p == '-' && r->p[1] && r->p[1] != ']') { hi = (unsigned char)r->p[1]; r->p += 2; }
        for (i = lo; i <= hi; i++) ft__rx_set(s, i);
    }
    if (*r->p != ']') { r->err = 1; return; }
    r->p++;
    for (i = 0; i < 32; i++) set[i] = neg ? (unsigned char)~s[i] : s[i];
}
static void ft__rx_quantifier(ft__rx *r, ft__rx_node *x) {          /* * + ? {m} {m,} {m,n}, if any */
    char *e; long n;
    if (*r->p == '*' || *r->p == '+' || *r->p == '?') {
        x->min = *r->p == '+';
        x->max = *r->p == '?' ? 1 : -1;
        r->p++;
        return;
    }
    if (*r->p != '{' || r->p[1] < '0' || r->p[1] > '9') return;
    n = strtol(r->p + 1, &e, 10);
    x->min = x->max = (int)FT__MIN(n, 1001L);
    if (*e == ',' && e[1] >= '0' && e[1] <= '9') {
        n = strtol(e + 1, &e, 10);
        x->max = (int)FT__MIN(n, 1001L);
    } else if (*e == ',') {
        x->max = -1;
        e++;
    }
    if (*e != '}' || (x->max >= 0 && x->max < x->min) || x->min > 1000 || x->max > 1000) r->err = 1;
    r->p = *e ? e + 1 : e;
}
static int ft__rx_alts(ft__rx *r);
static int ft__rx_atom(ft__rx *r) {                  /* one atom and its quantifier */
    int a;
    char c = *r->p++;
    if (c == '(') {
        a = ft__rx_new(r, FT__RX_GROUP);
        r->n[a].child = ft__rx_alts(r);
        if (*r->p != ')') { r->err = 1; return a; }
        r->p++;
    } else if (c == '^') return ft__rx_new(r, FT__RX_BOL);
    else if (c == '$') return ft__rx_new(r, FT__RX_EOL);
    else {
        unsigned char *set;
        a = ft__rx_new(r, FT__RX_SET);
        set = r->n[a].set;
        if (c == '.') { memset(set, 0xff, 32); set['\n' >> 3] &= (unsigned char)~(1u << ('\n' & 7)); }
        else if (c == '\\') { if (!*r->p) { r->err = 1; return a; } ft__rx_escape(set, *r->p++); }
        else if (c == '[') ft__rx_class(r, set);
        else if (c == '*' || c == '+' || c == '?' || c == ')' || c == '|') { r->err = 1; return a; }
        else ft__rx_set(set, c);
    }
    ft__rx_quantifier(r, &r->n[a]);
    return a;
}
static int ft__rx_alts(ft__rx *r) {                  /* alternatives of sequences, up to ')' or end */
    int head = ft__rx_new(r, FT__RX_ALT), alt = head, last = -1;
    while (!r->err) {
        if (!*r->p || *r->p == ')') break;
        if (*r->p == '|') { r->p++; r->n[alt].alt = ft__rx_new(r, FT__RX_ALT); alt = r->n[alt].alt; last = -1; continue; }
        {
            int a = ft__rx_atom(r);
            if (last < 0) r->n[alt].child = a; else r->n[last].next = a;
            last = a;
        }
    }
    return head;
}

/* the program: SET consumes a byte in its set, SPLIT goes on at x and at y, JMP at x */
#define FT__RX_PROG 20000
enum { FT__RX_I_SET, FT__RX_I_BOL, FT__RX_I_EOL, FT__RX_I_SPLIT, FT__RX_I_JMP, FT__RX_I_MATCH };
typedef struct ft__rx_inst { int op, x, y; const unsigned char *set; } ft__rx_inst;
typedef struct ft__rx_prog { const ft__rx *r; ft__rx_inst *i; int n, cap, err; } ft__rx_prog;

static int ft__rx_emit(ft__rx_prog *p, int op, int x, int y, const unsigned char *set) {
    if (p->n == p->cap) {
        int cap = FT__MIN(FT__MAX(2 * p->cap, 64), FT__RX_PROG);
        ft__rx_inst *i = p->n == FT__RX_PROG ? NULL : FT__CAST(ft__rx_inst *, FT_REALLOC(p->i, (size_t)cap * sizeof *i));
        if (!i) { p->err = 1; return 0; }
        p->i = i;
        p->cap = cap;
    }
    p->i[p->n].op = op; p->i[p->n].x = x; p->i[p->n].y = y; p->i[p->n].set = set;
    return p->n++;
}
static void ft__rx_code_alts(ft__rx_prog *p, int head);
static void ft__rx_code_once(ft__rx_prog *p, int node) {           /* the atom, once */
    const ft__rx_node *x = &p->r->n[node];
    if (x->kind == FT__RX_GROUP) ft__rx_code_alts(p, x->child);
    else ft__rx_emit(p, x->kind == FT__RX_SET ? FT__RX_I_SET : x->kind == FT__RX_BOL ? FT__RX_I_BOL : FT__RX_I_EOL, 0, 0, x->set);
}
/* atom{min,max}: min copies, then a loop (max -1) or max - min optional copies that all skip
   to the end; the optional copies' splits wait for their target with y = -1 */
static void ft__rx_code_atom(ft__rx_prog *p, int node) {
    const ft__rx_node *x = &p->r->n[node];
    int k, top, from;
    for (k = 0; k < x->min && !p->err; k++) ft__rx_code_once(p, node);
    if (x->max < 0) {
        top = ft__rx_emit(p, FT__RX_I_SPLIT, p->n + 1, -1, NULL);
        ft__rx_code_once(p, node);
        ft__rx_emit(p, FT__RX_I_JMP, top, 0, NULL);
        if (!p->err) p->i[top].y = p->n;
        return;
    }
    from = p->n;
    for (k = x->min; k < x->max && !p->err; k++) {
        ft__rx_emit(p, FT__RX_I_SPLIT, p->n + 1, -1, NULL);
        ft__rx_code_once(p, node);
    }
    for (k = from; k < p->n; k++)
        if (p->i[k].op == FT__RX_I_SPLIT && p->i[k].y < 0) p->i[k].y = p->n;
}
/* a | b | c: a split before each alternative but the last; the jumps out of them are chained
   through their x until the end is known */
static void ft__rx_code_alts(ft__rx_prog *p, int head) {
    int a, k, chain = -1, split;
    for (a = head; a >= 0 && !p->err; a = p->r->n[a].alt) {
        int last = p->r->n[a].alt < 0;
        split = last ? -1 : ft__rx_emit(p, FT__RX_I_SPLIT, p->n + 1, -1, NULL);
        for (k = p->r->n[a].child; k >= 0 && !p->err; k = p->r->n[k].next) ft__rx_code_atom(p, k);
        if (last) break;
        chain = ft__rx_emit(p, FT__RX_I_JMP, chain, 0, NULL);
        if (!p->err) p->i[split].y = p->n;
    }
    while (chain >= 0 && !p->err) {
        k = p->i[chain].x;
        p->i[chain].x = p->n;
        chain = k;
    }
}

/* add the thread at pc (and everything its jumps and splits reach at text position s) to list */
static void ft__rx_add(const ft__rx_prog *p, int *list, int *n, int pc, int *mark, int gen, int *stack, const char *s, const char *text) {
    int top = 0;
    stack[top++] = pc;
    while (top > 0) {
        const ft__rx_inst *in;
        pc = stack[--top];
        if (mark[pc] == gen) continue;
        mark[pc] = gen;
        in = &p->i[pc];
        if (in->op == FT__RX_I_JMP) stack[top++] = in->x;
        else if (in->op == FT__RX_I_SPLIT) { stack[top++] = in->y; stack[top++] = in->x; }
        else if (in->op == FT__RX_I_BOL) { if (s == text) stack[top++] = pc + 1; }
        else if (in->op == FT__RX_I_EOL) { if (!*s || (*s == '\n' && !s[1])) stack[top++] = pc + 1; }
        else list[(*n)++] = pc;
    }
}
/* every start position at once: 1 when some thread reaches MATCH */
static int ft__rx_run(const ft__rx_prog *p, const char *text) {
    int *mem = FT__CAST(int *, FT_MALLOC((size_t)p->n * 5 * sizeof(int) + sizeof(int))), *cl, *nl, *mark, *stack, nc = 0, nn, gen = 1, k, found = 0;
    const char *s;
    if (!mem) return FT_ERR_NOMEM;
    cl = mem; nl = cl + p->n; mark = nl + p->n; stack = mark + p->n;     /* the stack: 2 per marked pc */
    memset(mark, 0, (size_t)p->n * sizeof(int));
    for (s = text; !found; s++, gen++) {
        int *t;
        ft__rx_add(p, cl, &nc, 0, mark, gen, stack, s, text);
        for (k = 0, nn = 0; k < nc && !found; k++) {
            const ft__rx_inst *in = &p->i[cl[k]];
            if (in->op == FT__RX_I_MATCH) found = 1;
            else if (*s && (in->set[(unsigned char)*s >> 3] >> (*s & 7) & 1)) ft__rx_add(p, nl, &nn, cl[k] + 1, mark, gen + 1, stack, s + 1, text);
        }
        if (!*s) break;
        t = cl; cl = nl; nl = t; nc = nn;
    }
    FT_FREE(mem);
    return found;
}
FT_API int ft_regex_search(const char *pattern, const char *text) {
    ft__rx *r = FT__CAST(ft__rx *, FT_MALLOC(sizeof(ft__rx))); ft__rx_prog p; int head, found;
    if (!r) return FT_ERR_NOMEM;
    r->count = 0; r->err = 0; r->p = pattern;
    head = ft__rx_alts(r);
    if (r->err || *r->p) { FT_FREE(r); return ft_set_error(FT_ERR_INVALID, "regex: cannot parse '%s'", pattern); }
    memset(&p, 0, sizeof p);
    p.r = r;
    ft__rx_code_alts(&p, head);
    ft__rx_emit(&p, FT__RX_I_MATCH, 0, 0, NULL);
    found = p.err ? ft_set_error(FT_ERR_INVALID, "regex: '%s' needs more than %d instructions (counted repeats multiply)", pattern, FT__RX_PROG)
                  : ft__rx_run(&p, text);
    FT_FREE(p.i); FT_FREE(r);
    return found;
}

/* ---- rewards ---------------------------------------------------------------------------------------- */
static int ft__last_number(const char *s, double *v) {      /* the last decimal number in s */
    const char *p, *best = NULL;
    for (p = s; *p; p++)
        if ((*p >= '0' && *p <= '9') && (p == s || !((p[-1] >= '0' && p[-1] <= '9') || p[-1] == '.'))) best = p;
    if (!best) return 0;
    if (best > s && best[-1] == '-') best--;
    *v = strtod(best, NULL);
    return 1;
}
FT_API float ft_reward_number(void *user, const ft_rollout *r) {
    double a, b; (void)user;
    return r->answer && ft__last_number(r->text, &a) && ft__last_number(r->answer, &b) && fabs(a - b) <= 1e-9 * FT__MAX(1.0, fabs(b)) ? 1.0f : 0.0f;
}
FT_API float ft_reward_regex(void *user, const ft_rollout *r) { return ft_regex_search(FT__CAST(const char *, user), r->text) == 1 ? 1.0f : 0.0f; }
FT_API float ft_reward_length(void *user, const ft_rollout *r) {
    int target = *FT__CAST(int *, user); size_t n = strlen(r->text);
    return target > 0 && n > (size_t)target ? -(float)(n - (size_t)target) / (float)target : 0.0f;
}
FT_API float ft_reward_model(void *user, const ft_rollout *r) {
    ft_rm_scorer *s = FT__CAST(ft_rm_scorer *, user); ft_batch_data bd; ft_tensor *rw; float v = NAN; int old;
    memset(&bd, 0, sizeof bd);
    if (ft__batch_reserve(&bd, 1, r->prompt_len + r->len) != FT_OK) return NAN;
    memcpy(bd.ids, r->prompt, (size_t)r->prompt_len * sizeof(int32_t));
    memcpy(bd.ids + r->prompt_len, r->ids, (size_t)r->len * sizeof(int32_t));
    bd.len[0] = (int32_t)(r->prompt_len + r->len);
    ft_ctx_reset(s->ctx);
    old = ft_ctx_set_grad(s->ctx, 0);
    if (ft_sequence_rewards(s->ctx, s->model, &bd, &rw) == FT_OK) v = FT__F(rw)[0];
    ft_ctx_set_grad(s->ctx, old);
    ft_batch_data_free(&bd);
    return v;
}

/* ---- rollouts: prompts left-padded to a common length P, completions after them ---------------------
   Row i: [pad .. pad, prompt_i, completion_i, pad ..]; positions restart at 0 where the prompt
   starts and the pads are a document of their own (seg), so every row sees only itself. Column
   P - 1 + t predicts completion token t: the (B, Tr) per-token log-probs are one slice. */
typedef struct ft__rl_batch {
    int64_t n, P, Tr;               /* rows, prompt columns, completion columns (max_new)          */
    int32_t *gen; int64_t *gen_len; /* (n, Tr) sampled ids, their counts                           */
    float *reward, *adv, *mask;     /* (n), (n), (n * Tr)                                          */
    ft_batch_data bd;               /* (n, P + Tr) ids, targets, pos, seg                          */
} ft__rl_batch;
static void ft__rl_batch_free(ft__rl_batch *b) { FT_FREE(b->gen); FT_FREE(b->gen_len); FT_FREE(b->reward); ft_batch_data_free(&b->bd); memset(b, 0, sizeof *b); }

/* per-token log-probs (n, Tr) of the sampled tokens (on the tape when grad is on); optional values
   (n, Tr) from the adapter's scalar head at the same positions */
static ft_result ft__rl_logps(ft_ctx *ctx, ft_model *m, const ft__rl_batch *rb, ft_tensor **lp, ft_tensor **val) {
    ft_batch b; ft_tensor *h, *l; int64_t s2[2];
    memset(&b, 0, sizeof b);
    b.B = rb->n; b.T = rb->P + rb->Tr; b.ids = rb->bd.ids; b.pos = rb->bd.pos; b.seg = rb->bd.seg;
    h = ft_model_hidden(ctx, m, &b);
    l = ft_model_loss(ctx, m, h, rb->bd.targets, 1);
    s2[0] = rb->n; s2[1] = b.T;
    *lp = ft_slice(ctx, ft_reshape(ctx, l, 2, s2), 1, rb->P - 1, rb->Tr);
    if (val) {
        if (!m->peft || !m->peft->score) return ft_set_error(FT_ERR_STATE, "ppo: the policy needs a value head (the adapter's reward_head)");
        *val = ft_slice(ctx, ft_reshape(ctx, ft_matmul(ctx, h, m->peft->score, 0, 1), 2, s2), 1, rb->P - 1, rb->Tr);
    }
    return *lp && (!val || *val) ? FT_OK : ft_set_error(ctx->status ? ctx->status : FT_ERR_NOMEM, "rl: %s", ft_last_error());
}

/* sample `group` completions for each of the prompts order[0..n_prompts), score them */
static ft_result ft__rl_rollout(ft_ctx *ctx, ft_model *m, const ft_dataset *d, const int64_t *order, int64_t n_prompts,
                                const ft_rl_opts *o, int64_t G, ft__rl_batch *rb, ft_rl_stats *st) {
    int64_t i, t, n = n_prompts * G, P = 1, Tr = o->max_new, T; ft_result r; ft_kv_cache *kv = NULL;
    const int32_t **pr = NULL; int64_t *pl = NULL; ft_gen_opts go; int32_t stop[FT_MAX_STOP]; char *text = NULL; size_t cap = 65536; double len = 0;
    for (i = 0; i < n_prompts; i++) P = FT__MAX(P, ft_dataset_get(d, order[i])->prompt_len);
    T = P + Tr; rb->n = n; rb->P = P; rb->Tr = Tr;
    rb->gen = FT__CAST(int32_t *, FT_MALLOC((size_t)(n * Tr) * sizeof(int32_t)));
    rb->gen_len = FT__CAST(int64_t *, FT_MALLOC((size_t)n * sizeof(int64_t)));
    rb->reward = FT__CAST(float *, FT_MALLOC((size_t)(2 * n + n * Tr) * sizeof(float)));
    pr = FT__CAST(const int32_t **, FT_MALLOC((size_t)n * sizeof(int32_t *)));
    pl = FT__CAST(int64_t *, FT_MALLOC((size_t)n * sizeof(int64_t)));
    text = FT__CAST(char *, FT_MALLOC(cap));
    if (!rb->gen || !rb->gen_len || !rb->reward || !pr || !pl || !text) { r = ft_set_error(FT_ERR_NOMEM, "rl: out of memory"); goto done; }
    rb->adv = rb->reward + n; rb->mask = rb->adv + n;
    for (i = 0; i < n; i++) { const ft_example *e = ft_dataset_get(d, order[i / G]); pr[i] = e->ids; pl[i] = e->prompt_len; }
    memset(&go, 0, sizeof go);
    go.max_new = o->max_new; go.sample = o->sample; go.n_stop = ft_tokenizer_stop_ids(m->tok, stop);
    go.stop = stop;
    if ((r = ft_kv_cache_init(&kv, m, n, T)) != FT_OK) goto done;
    if ((r = ft_generate(ctx, m, kv, n, pr, pl, &go, &ctx->rng, rb->gen, rb->gen_len, NULL)) != FT_OK) goto done;
    for (i = 0; i < n; i++) {                      /* rewards */
        const ft_example *e = ft_dataset_get(d, order[i / G]); ft_rollout ro; int k; double sum = 0;
        int64_t nt = m->tok ? ft_detokenize(m->tok, rb->gen + i * Tr, rb->gen_len[i], text, (int64_t)cap - 1, 0) : 0;
        text[nt < 0 ? 0 : FT__MIN(nt, (int64_t)cap - 1)] = 0;
        ro.prompt = e->ids; ro.prompt_len = e->prompt_len; ro.ids = rb->gen + i * Tr; ro.len = rb->gen_len[i]; ro.text = text; ro.answer = e->answer;
        for (k = 0; k < o->n_rewards; k++) sum += (double)o->rewards[k].weight * o->rewards[k].fn(o->rewards[k].user, &ro);
        rb->reward[i] = (float)sum;
        len += (double)rb->gen_len[i] / (double)n;
    }
    if ((r = ft__batch_reserve(&rb->bd, n, T)) != FT_OK) goto done;
    for (i = 0; i < n; i++) {                      /* the rows, left-padded prompts */
        int64_t L = pl[i], off = P - L, row = i * T;
        for (t = 0; t < T; t++) {
            int in_p = t >= off && t < P, in_c = t >= P && t - P < rb->gen_len[i];
            rb->bd.ids[row + t] = in_p ? pr[i][t - off] : in_c ? rb->gen[i * Tr + t - P] : 0;
            rb->bd.pos[row + t] = (int32_t)(t >= off ? t - off : 0);
            rb->bd.seg[row + t] = t >= off ? 1 : 0;
            rb->bd.targets[row + t] = -100;
        }
        for (t = 0; t < Tr; t++) {
            rb->mask[i * Tr + t] = t < rb->gen_len[i] ? 1.0f : 0.0f;
            if (t < rb->gen_len[i]) rb->bd.targets[row + P - 1 + t] = rb->gen[i * Tr + t];
        }
        rb->bd.len[i] = (int32_t)(P + rb->gen_len[i]);
    }
    if (st) st->completion_len = len;
done:
    ft_kv_cache_free(kv); FT_FREE(pr); FT_FREE(pl); FT_FREE(text);
    return r;
}

/* ---- GRPO and PPO micro-batches: a rollout batch per micro-batch slot, made every rl.iterations
   steps and used by each of them (GRPO's num_iterations, PPO's epochs) ------------------------------ */
struct ft__rl_buf {
    ft__rl_batch rb;
    float *old, *ref;               /* (n, Tr) the rollout policy's and the reference's log-probs  */
    ft_ppo_batch pb;                /* PPO: values, KL, rewards, advantages, returns, masks        */
    float *ppo_mem; int64_t *seqlen;
    ft_rl_stats st;                 /* the rollout's: reward, its spread, length, KL, ...         */
};
static void ft__rl_buf_free(ft__rl_buf *b) {
    ft__rl_batch_free(&b->rb);
    FT_FREE(b->old); FT_FREE(b->ppo_mem); FT_FREE(b->seqlen);
    memset(b, 0, sizeof *b);
}

/* the rollout policy's log-probs (and PPO's values) and the reference's, without gradient */
static ft_result ft__rl_old_logps(ft__trainer *t, ft__rl_buf *b, int64_t NT) {
    ft_ctx *ctx = t->ctx; ft_tensor *lp, *val = NULL; ft_result r; int ppo = t->o.objective == FT_OBJ_PPO;
    int g = ft_ctx_set_grad(ctx, 0);
    ft_ctx_reset(ctx);
    r = ft__rl_logps(ctx, t->m, &b->rb, &lp, ppo ? &val : NULL);
    if (r == FT_OK) memcpy(b->old, lp->data, (size_t)NT * sizeof(float));
    if (r == FT_OK && ppo) memcpy(b->ppo_mem, val->data, (size_t)NT * sizeof(float));
    if (r == FT_OK && (ppo || t->o.rl.grpo.beta != 0)) {
        ft_peft_set_enabled(t->m->peft, 0);
        ft_ctx_reset(ctx);
        r = ft__rl_logps(ctx, t->m, &b->rb, &lp, NULL);
        ft_peft_set_enabled(t->m->peft, 1);
        if (r == FT_OK) memcpy(b->ref, lp->data, (size_t)NT * sizeof(float));
    }
    ft_ctx_set_grad(ctx, g);
    return r;
}

/* PPO's batch (TRL 1.9): KL-penalised rewards at the current kl_coef (st.obj[0]), GAE, whitening;
   then the adaptive controller moves kl_coef for the next batch */
static void ft__rl_ppo_prepare(ft__trainer *t, ft__rl_buf *b, int64_t NT) {
    ft_ppo_opts po = t->o.rl.ppo; int64_t i, n = b->rb.n; double sum = 0, var = 0;
    b->pb.B = n; b->pb.T = b->rb.Tr; b->pb.logprobs = b->old; b->pb.ref = b->ref; b->pb.scores = b->rb.reward;
    b->pb.values = b->ppo_mem; b->pb.kl = b->pb.values + NT; b->pb.rewards = b->pb.kl + NT;
    b->pb.advantages = b->pb.rewards + NT; b->pb.returns = b->pb.advantages + NT;
    b->pb.pad = FT__CAST(unsigned char *, b->pb.returns + NT); b->pb.pad_p1 = b->pb.pad + NT;
    for (i = 0; i < n; i++) { b->seqlen[i] = FT__MAX(b->rb.gen_len[i], 1) - 1; sum += b->rb.reward[i]; }
    b->pb.seqlen = b->seqlen;
    po.kl_coef = (float)t->st.obj[0];
    ft_ppo_prepare(&b->pb, &po, &b->st);
    t->st.obj[0] = ft_ppo_adapt_kl(po.kl_coef, b->st.kl, n, po.kl_target, po.kl_horizon);
    b->st.reward = sum / (double)n;
    for (i = 0; i < n; i++) var += (b->rb.reward[i] - b->st.reward) * (b->rb.reward[i] - b->st.reward);
    b->st.reward_std = n > 1 ? sqrt(var / (double)(n - 1)) : 0;
}

/* a new rollout batch in slot b: rl.prompts prompts (all from one epoch), rl.group completions
   each, their rewards, the old and reference log-probs, then GRPO's advantages or PPO's batch */
static ft_result ft__rl_make(ft__trainer *t, ft__rl_buf *b) {
    int64_t got, NT; ft_result r; int ppo = t->o.objective == FT_OBJ_PPO;
    const int64_t *ord = ft__take(t, t->o.rl.prompts, 1, &got);
    ft__rl_buf_free(b);
    r = ft__rl_rollout(t->ctx, t->m, t->data, ord, got, &t->o.rl, t->o.rl.group, &b->rb, &b->st);
    t->st.data_pos += got;
    if (r != FT_OK) return r;
    NT = b->rb.n * b->rb.Tr;
    b->old = FT__CAST(float *, FT_MALLOC((size_t)NT * 2 * sizeof(float)));
    if (ppo) {
        b->ppo_mem = FT__CAST(float *, FT_MALLOC((size_t)NT * 5 * sizeof(float) + (size_t)NT * 2));
        b->seqlen = FT__CAST(int64_t *, FT_MALLOC((size_t)b->rb.n * sizeof(int64_t)));
    }
    if (!b->old || (ppo && (!b->ppo_mem || !b->seqlen))) return ft_set_error(FT_ERR_NOMEM, "rl: out of memory");
    b->ref = b->old + NT;
    if ((r = ft__rl_old_logps(t, b, NT)) != FT_OK) return r;
    if (ppo) ft__rl_ppo_prepare(t, b, NT);
    else ft_grpo_advantages(b->rb.reward, got, t->o.rl.group, t->o.rl.scale, b->rb.adv, &b->st);
    t->step_tokens += NT;
    return FT_OK;
}

/* GRPO / PPO: the loss of this slot's rollout batch under the current policy */
static ft_result ft__micro_rollouts(ft__trainer *t, int slot, float scale, double *loss) {
    ft_ctx *ctx = t->ctx; ft__rl_buf *b = &t->ro[slot]; ft_tensor *lp, *val = NULL, *l; ft_rl_stats ls;
    int ppo = t->o.objective == FT_OBJ_PPO; ft_result r;
    if (!t->m->peft) return ft_set_error(FT_ERR_STATE, "rl: the policy needs an adapter (the reference is the model with it off)");
    if (t->st.step % t->o.rl.iterations == 0 && (r = ft__rl_make(t, b)) != FT_OK) return r;
    ls = b->st;
    ft_ctx_reset(ctx);
    if ((r = ft__rl_logps(ctx, t->m, &b->rb, &lp, ppo ? &val : NULL)) != FT_OK) return r;
    if (ppo) {
        ft_ppo_opts po = t->o.rl.ppo;
        l = ft_ppo_loss(ctx, lp, val, &b->pb, &po, &ls);
    } else {
        ft_grpo_opts go = t->o.rl.grpo; int64_t i, NT = b->rb.n * b->rb.Tr;
        if (go.agg == FT_GRPO_AGG_DAPO && go.num_items <= 0) { double s = 0; for (i = 0; i < NT; i++) s += b->rb.mask[i]; go.num_items = (int64_t)s; }
        l = ft_grpo_loss(ctx, lp, t->o.rl.iterations > 1 ? b->old : NULL, go.beta != 0 ? b->ref : NULL, b->rb.adv, b->rb.mask, &go, &ls);
        if (go.beta == 0) ls.kl = 0;
    }
    t->rl = ls;
    return ft__micro_backward(t, l, scale, loss);
}

FT_API ft_result ft_eval_rl(ft_ctx *ctx, ft_model *m, const ft_dataset *d, int max_new, const ft_reward_term *rewards, int n_rewards,
                            float max_reward, int64_t limit, double *mean_reward, double *solved) {
    int64_t i, n = ft_dataset_size(d), *order, done = 0; double sum = 0, full = 0; ft_result r = FT_OK; ft_rl_opts o;
    if (limit > 0 && limit < n) n = limit;
    order = FT__CAST(int64_t *, FT_MALLOC((size_t)FT__MAX(n, 1) * sizeof(int64_t)));
    if (!order) return ft_set_error(FT_ERR_NOMEM, "rl eval: out of memory");
    for (i = 0; i < n; i++) order[i] = i;
    memset(&o, 0, sizeof o);
    o.max_new = max_new > 0 ? max_new : 64; o.rewards = rewards; o.n_rewards = n_rewards;   /* greedy: temperature 0 */
    while (done < n && r == FT_OK) {
        ft__rl_batch rb; int64_t b = FT__MIN(8, n - done);
        memset(&rb, 0, sizeof rb);
        r = ft__rl_rollout(ctx, m, d, order + done, b, &o, 1, &rb, NULL);
        for (i = 0; r == FT_OK && i < b; i++) { sum += rb.reward[i]; full += rb.reward[i] >= max_reward; }
        ft__rl_batch_free(&rb);
        done += b;
    }
    FT_FREE(order);
    *mean_reward = n ? sum / (double)n : 0; if (solved) *solved = n ? full / (double)n : 0;
    return r;
}

#else  /* FT_NO_RL */
struct ft__rl_buf { int unused; };
static void ft__rl_buf_free(ft__rl_buf *b) { (void)b; }
static ft_result ft__micro_rollouts(ft__trainer *t, int slot, float scale, double *loss) {
    (void)t; (void)slot; (void)scale; (void)loss;
    return ft_set_error(FT_ERR_UNSUPPORTED, "train: GRPO and PPO are compiled out (FT_NO_RL)");
}
#endif /* FT_NO_RL */

/* ============================================================================================
   [loop] the training loop of every objective; generation-based evaluation; SVG plots
   ============================================================================================ */
/* ---- the training loop: every objective ----------------------------------------------------------
   Each optimizer step: grad_accum micro-batches made by the objective's kind (each loss scaled by
   1/grad_accum), global-norm clipping, one AdamW/SGD step at the scheduled rate. A non-finite loss
   or gradient stops the step before the update (abort, or skip and go on). Checkpoints hold
   everything to resume the same curve bit for bit: parameters, moments, the RNG, the data order's
   position, the objective's state (PPO's KL coefficient); for GRPO and PPO they fall between
   rollout batches. */
typedef ft_result (*ft__micro_fn)(ft__trainer *t, int slot, float scale, double *loss);
static const ft__micro_fn ft__micro[] = {ft__micro_tokens, ft__micro_pairs, ft__micro_kto, ft__micro_scores, ft__micro_rollouts};

static int ft__data_fits(ft_data_format want, ft_data_format have) {
    if (want == FT_DATA_AUTO) return have == FT_DATA_INSTRUCT || have == FT_DATA_CHAT || have == FT_DATA_TEXT;
    if (want == FT_DATA_TEXT) return have == FT_DATA_TEXT || have == FT_DATA_INSTRUCT || have == FT_DATA_CHAT;
    return want == have;
}

/* every real-valued option finite (a NaN rate trains an all-NaN adapter), the rate not negative */
static ft_result ft__train_check_opts(const ft_train_opts *o) {
    const ft_rl_opts *rl = &o->rl;
    const struct { const char *name; float v; } f[] = {
        {"lr", o->lr}, {"beta", o->beta}, {"gamma", o->gamma}, {"label_smoothing", o->label_smoothing}, {"tau", o->tau},
        {"desirable_weight", o->desirable_weight}, {"undesirable_weight", o->undesirable_weight}, {"rm_center", o->rm_center},
        {"min_lr_ratio", o->min_lr_ratio}, {"max_grad_norm", o->max_grad_norm}, {"lr_scale_b", o->lr_scale_b},
        {"optim.beta1", o->optim.beta1}, {"optim.beta2", o->optim.beta2}, {"optim.eps", o->optim.eps},
        {"optim.weight_decay", o->optim.weight_decay}, {"optim.momentum", o->optim.momentum},
        {"rl.sample.temperature", rl->sample.temperature}, {"rl.sample.top_p", rl->sample.top_p}, {"rl.grpo.beta", rl->grpo.beta},
        {"rl.grpo.epsilon", rl->grpo.epsilon}, {"rl.grpo.epsilon_high", rl->grpo.epsilon_high}, {"rl.ppo.kl_coef", rl->ppo.kl_coef},
        {"rl.ppo.gamma", rl->ppo.gamma}, {"rl.ppo.lam", rl->ppo.lam}, {"rl.ppo.cliprange", rl->ppo.cliprange},
        {"rl.ppo.cliprange_value", rl->ppo.cliprange_value}, {"rl.ppo.vf_coef", rl->ppo.vf_coef},
        {"rl.ppo.kl_target", rl->ppo.kl_target}, {"rl.ppo.kl_horizon", rl->ppo.kl_horizon},
    };
    size_t i;
    for (i = 0; i < sizeof f / sizeof f[0]; i++)
        if (!(fabsf(f[i].v) <= FLT_MAX)) return ft_set_error(FT_ERR_INVALID, "train: option %s is %g (not finite)", f[i].name, (double)f[i].v);
    if (o->lr < 0) return ft_set_error(FT_ERR_INVALID, "train: option lr is %g (>= 0)", (double)o->lr);
    return FT_OK;
}
static ft_result ft__train_begin(ft__trainer *t, ft_ctx *ctx, ft_model *m, ft_params *P, const ft_dataset *data, const ft_train_opts *opts) {
    ft_result r; int i;
    memset(t, 0, sizeof *t);
    t->ctx = ctx; t->m = m; t->P = P; t->data = data; t->o = *opts; t->n = ft_dataset_size(data);
    t->def = opts->custom ? opts->custom : ft_objective_get(opts->objective);
    if (!t->def) return ft_set_error(FT_ERR_INVALID, "train: objective %d", (int)opts->objective);
    if (t->def->kind == FT_KIND_PAIRS && !t->def->pair_loss) return ft_set_error(FT_ERR_INVALID, "train: objective %s has no pair loss", t->def->name);
    if (t->n < 1) return ft_set_error(FT_ERR_INVALID, "train: no examples");
    if (!ft__data_fits(t->def->data, ft_dataset_format(data)))
        return ft_set_error(FT_ERR_INVALID, "train: %s trains on %s data, not %s", t->def->name,
                            ft_data_format_name(t->def->data == FT_DATA_AUTO ? FT_DATA_INSTRUCT : t->def->data), ft_data_format_name(ft_dataset_format(data)));
    if (t->o.pack && t->def->kind != FT_KIND_TOKENS) return ft_set_error(FT_ERR_INVALID, "train: %s does not pack", t->def->name);
    if (t->def->kind == FT_KIND_ROLLOUTS && t->o.rl.n_rewards < 1 && t->o.objective == FT_OBJ_GRPO) return ft_set_error(FT_ERR_INVALID, "rl: no reward function");
    if ((r = ft__train_check_opts(opts)) != FT_OK) return r;
    ft__train_fill(&t->o, t->def, t->n);
    if (t->def->kind != FT_KIND_ROLLOUTS && t->def->kind != FT_KIND_SCORES && ft_dataset_without_targets(data, t->o.seq_len) == t->n)
        return ft_set_error(FT_ERR_INVALID, "train: no example keeps a target token within seq_len %lld (all %lld lose every target token: a longer seq_len?)",
                            (long long)t->o.seq_len, (long long)t->n);
    t->o.rl.prompts = FT__MIN(t->o.rl.prompts, t->n);
    t->st.data_seed = t->o.seed ? t->o.seed : 1;
    t->st.obj[0] = t->o.rl.ppo.kl_coef;
    if ((r = ft_optim_init(&t->opt, P, &t->o.optim)) != FT_OK) return r;
    if (t->o.lr_scale_b != 0)                         /* LoRA+: a larger rate for every B */
        for (i = 0; i < P->n; i++) if (strstr(P->t[i]->name, "lora_B")) ft_optim_set_lr_scale(t->opt, P->t[i], t->o.lr_scale_b);
    if (t->def->kind == FT_KIND_ROLLOUTS) {
        t->ro = FT__CAST(ft__rl_buf *, FT_MALLOC((size_t)t->o.grad_accum * sizeof(ft__rl_buf)));
        if (!t->ro) return ft_set_error(FT_ERR_NOMEM, "train: out of memory");
        memset(t->ro, 0, (size_t)t->o.grad_accum * sizeof(ft__rl_buf));
        ft_rng_seed(&ctx->rng, t->st.data_seed);      /* sampling: the run's seed */
    }
    if (m && m->c.n_expert) {               /* a mixture of experts: its router losses */
        size_t i2;
        for (i2 = 0; t->o.router_aux_coef < 0 && i2 < sizeof ft__archs / sizeof ft__archs[0]; i2++)
            if (ft__archs[i2].arch == m->c.arch) t->o.router_aux_coef = ft__archs[i2].router_aux;
        if ((t->o.router_aux_coef > 0 || t->o.router_z_coef > 0) && ctx->checkpointing)
            return ft_set_error(FT_ERR_UNSUPPORTED, "train: the router losses need the router logits kept (no gradient checkpointing), or --router-aux-coef 0");
        t->moe_load = FT__CAST(float *, FT_MALLOC((size_t)(m->c.n_layer * m->c.n_expert) * sizeof(float)));
        if (!t->moe_load) return ft_set_error(FT_ERR_NOMEM, "train: out of memory");
        memset(t->moe_load, 0, (size_t)(m->c.n_layer * m->c.n_expert) * sizeof(float));
    }
    if (t->o.resume_from && (r = ft_checkpoint_load(t->o.resume_from, P, t->opt, &ctx->rng, &t->st)) != FT_OK) return r;
    if ((r = ft__params_finite(P, "train: a trainable parameter")) != FT_OK) return r;
    if (m && !m->file_finite && (r = ft_gguf_check_finite(m->g)) != FT_OK) return r;   /* the file, once per model: ~0.3 s for 135M */
    if (m) m->file_finite = 1;
    t->first_step = t->st.step;
    t->order = FT__CAST(int64_t *, FT_MALLOC((size_t)t->n * sizeof(int64_t)));
    if (!t->order) return ft_set_error(FT_ERR_NOMEM, "train: out of memory");
    ft__shuffle(t->order, t->n, t->st.data_seed + (uint64_t)t->st.epoch * 0x9e3779b97f4a7c15ull);
    t->t_start = t->t_window = ft_time_seconds();
    return FT_OK;
}

/* after the update: the callback (with an evaluation when due), then a checkpoint when due */
static ft_result ft__train_report(ft__trainer *t, double loss, float lr, double gnorm) {
    ft_step_info info; double now = ft_time_seconds(); ft_result r = FT_OK; int64_t s = t->st.step;
    int boundary = t->def->kind != FT_KIND_ROLLOUTS || s % t->o.rl.iterations == 0;
    memset(&info, 0, sizeof info);
    info.step = s; info.steps = t->o.steps; info.epoch = t->st.epoch; info.loss = loss; info.lr = lr; info.grad_norm = gnorm;
    info.tokens = t->st.tokens; info.tokens_per_s = t->tok_window / FT__MAX(now - t->t_window, 1e-9);
    info.elapsed_s = now - t->t_start;
    info.eta_s = info.elapsed_s / (double)FT__MAX(s - t->first_step, 1) * (double)(t->o.steps - s);
    info.eval_loss = NAN; info.pref = t->pref; info.rl = t->rl;
    if (t->moe_load) {
        info.moe_aux = t->moe_aux; info.moe_z = t->moe_z; info.moe_load = t->moe_load;
        info.moe_layers = t->m->c.n_layer; info.moe_experts = t->m->c.n_expert;
    }
    if (t->o.eval && t->o.eval_every > 0 && t->def->kind != FT_KIND_ROLLOUTS && (s % t->o.eval_every == 0 || s == t->o.steps))
        r = ft_eval_loss(t->ctx, t->m, t->o.eval, t->o.batch, t->o.seq_len, &info.eval_loss, NULL);
    if (r == FT_OK && t->o.on_step && t->o.on_step(t->o.user, &info))
        r = ft_set_error(FT_ERR_STATE, "train: stopped by the step callback at step %lld", (long long)s);
    t->t_window = ft_time_seconds();
    t->tok_window = 0;
    if (r == FT_OK && boundary && t->o.checkpoint_path && t->o.save_every > 0 && (s % t->o.save_every == 0 || s == t->o.steps))
        r = ft_checkpoint_save(t->o.checkpoint_path, t->P, t->opt, &t->ctx->rng, &t->st);
    return r;
}

static ft_result ft__train_step(ft__trainer *t) {
    double loss = 0, gnorm; float lr; int a, bad = 0; ft_result r = FT_OK;
    memset(&t->pref, 0, sizeof t->pref);
    t->step_tokens = 0;
    ft_params_zero_grad(t->P);
    for (a = 0; a < t->o.grad_accum && r == FT_OK; a++) {
        double l = 0;
        r = ft__micro[t->def->kind](t, a, 1.0f / (float)t->o.grad_accum, &l);
        if (r == FT_ERR_NUMERIC) { bad = 1; r = FT_OK; break; }
        loss += l / t->o.grad_accum;
    }
    if (r != FT_OK) return r;
    gnorm = ft_params_grad_norm(t->P);
    if (bad || !isfinite(gnorm)) {
        char msg[1100];
        snprintf(msg, sizeof msg, "train: step %lld: non-finite %s (%s)", (long long)t->st.step + 1, bad ? "loss" : "gradient", bad ? ft_last_error() : "norm");
        if (!t->o.skip_nonfinite) return ft_set_error(FT_ERR_NUMERIC, "%s; stopped before the update (the weights are intact)", msg);
        ft_log_message(t->ctx, 1, "%s; step skipped", msg);
        ft_params_zero_grad(t->P);
        t->st.step++;
        return FT_OK;
    }
    if (t->o.max_grad_norm > 0 && gnorm > t->o.max_grad_norm) ft_params_scale_grad(t->P, (float)(t->o.max_grad_norm / (gnorm + 1e-6)));
    lr = ft_lr_at(t->o.sched, t->o.lr, t->st.step, t->o.warmup, t->o.steps, t->o.min_lr_ratio);
    if ((r = ft_optim_step(t->opt, lr)) != FT_OK) return r;
    t->st.step++;
    t->st.tokens += (double)t->step_tokens;
    t->tok_window += (double)t->step_tokens;
    return ft__train_report(t, loss, lr, gnorm);
}

FT_API ft_result ft_train(ft_ctx *ctx, ft_model *m, ft_params *P, const ft_dataset *train, const ft_train_opts *opts, ft_train_state *state) {
    ft__trainer t; ft_result r; int a;
    r = ft__train_begin(&t, ctx, m, P, train, opts);
    while (r == FT_OK && t.st.step < t.o.steps) r = ft__train_step(&t);
    if (state) *state = t.st;
    for (a = 0; t.ro && a < t.o.grad_accum; a++) ft__rl_buf_free(&t.ro[a]);
    FT_FREE(t.ro); FT_FREE(t.order); FT_FREE(t.moe_load); ft_batch_data_free(&t.bd); ft_optim_free(t.opt);
    return r;
}

/* ---- generation-based evaluation ----------------------------------------------------------------------
   For each example with a prompt and a reference (instruction / chat data: everything before the
   first target token is the prompt, the first run of target tokens the reference; prompt data:
   its prompt and "answer"), generate greedily (batches of up to 8 sequences) and compare the
   text with the reference after trimming white space: exact match, and "contains". */
static void ft__trim(char **s, int64_t *n) {
    while (*n > 0 && (unsigned char)(*s)[0] <= ' ') { (*s)++; (*n)--; }
    while (*n > 0 && (unsigned char)(*s)[*n - 1] <= ' ') (*n)--;
}
FT_API ft_result ft_eval_generate(ft_ctx *ctx, ft_model *m, const ft_dataset *d, int max_new, int64_t limit,
                                  ft_eval_gen *res, ft_eval_gen_fn on_item, void *user) {
    const ft_tokenizer *tok = m->tok; ft_kv_cache *kv = NULL; ft_result r = FT_OK;
    int64_t i, n = ft_dataset_size(d), maxp = 0, s;
    int32_t stop[FT_MAX_STOP], *out = NULL; int n_stop = 0;
    enum { G = 8 };
    char *gen = NULL, *ref = NULL; size_t cap = 65536;
    memset(res, 0, sizeof *res);
    if (!tok) return ft_set_error(FT_ERR_STATE, "eval: the model has no tokenizer");
    if (limit > 0 && limit < n) n = limit;
    n_stop = ft_tokenizer_stop_ids(tok, stop);
    for (i = 0; i < n; i++) {
        const ft_example *e = ft_dataset_get(d, i); int64_t p = e->prompt_len;
        if (!p) while (p < e->n && !e->loss[p]) p++;
        maxp = FT__MAX(maxp, p);
    }
    gen = FT__CAST(char *, FT_MALLOC(cap)); ref = FT__CAST(char *, FT_MALLOC(cap));
    out = FT__CAST(int32_t *, FT_MALLOC((size_t)(G * max_new) * sizeof(int32_t)));
    if (!gen || !ref || !out) { r = ft_set_error(FT_ERR_NOMEM, "eval: out of memory"); goto done; }
    if ((r = ft_kv_cache_init(&kv, m, G, maxp + max_new + 1)) != FT_OK) goto done;
    for (i = 0; i < n && r == FT_OK; i += G) {
        const int32_t *prompts[G]; int64_t plen[G], olen[G], g = FT__MIN((int64_t)G, n - i);
        ft_gen_opts go; ft_rng rng;
        memset(&go, 0, sizeof go); go.max_new = max_new; go.stop = stop; go.n_stop = n_stop;
        ft_rng_seed(&rng, 1);
        for (s = 0; s < g; s++) {
            const ft_example *e = ft_dataset_get(d, i + s); int64_t p = e->prompt_len;
            if (!p) while (p < e->n && !e->loss[p]) p++;
            if (p == 0 || p >= e->n + (e->answer ? 1 : 0)) { r = ft_set_error(FT_ERR_FORMAT, "eval: example %lld has no prompt/reference split", (long long)(i + s)); break; }
            prompts[s] = e->ids; plen[s] = p;
        }
        if (r != FT_OK) break;
        if ((r = ft_generate(ctx, m, kv, g, prompts, plen, &go, &rng, out, olen, NULL)) != FT_OK) break;
        for (s = 0; s < g; s++) {
            const ft_example *e = ft_dataset_get(d, i + s); int64_t p = plen[s], q = p, gl, rl; char *gs = gen, *rs = ref;
            gl = ft_detokenize(tok, out + s * max_new, olen[s], gen, (int64_t)cap, 0);
            if (e->answer) { rl = (int64_t)strlen(e->answer); if (rl >= (int64_t)cap) rl = (int64_t)cap - 1; memcpy(ref, e->answer, (size_t)rl); }
            else {
                while (q < e->n && e->loss[q]) q++;
                rl = ft_detokenize(tok, e->ids + p, q - p, ref, (int64_t)cap, 0);
            }
            if (gl < 0 || gl >= (int64_t)cap || rl < 0 || rl >= (int64_t)cap) { r = ft_set_error(FT_ERR_INVALID, "eval: text too long"); break; }
            gen[gl] = 0; ref[rl] = 0;
            ft__trim(&gs, &gl); ft__trim(&rs, &rl);
            gs[gl] = 0; rs[rl] = 0;
            res->n++;
            if (gl == rl && memcmp(gs, rs, (size_t)gl) == 0) res->exact++;
            if (rl > 0 && strstr(gs, rs)) res->contains++;
            if (on_item) on_item(user, i + s, gs, rs);
        }
    }
done:
    if (res->n) { res->exact_rate = (double)res->exact / (double)res->n; res->contains_rate = (double)res->contains / (double)res->n; }
    ft_kv_cache_free(kv); FT_FREE(gen); FT_FREE(ref); FT_FREE(out);
    return r;
}

/* ---- SVG line plots (loss and reward curves), written by the library itself ------------------------ */
static double ft__nice_step(double range) {
    double e = pow(10.0, floor(log10(range > 0 ? range : 1))), f = range / e;
    return (f < 1.5 ? 1.0 : f < 3.5 ? 2.0 : f < 7.5 ? 5.0 : 10.0) * e;
}
FT_API ft_result ft_svg_plot(const char *path, const char *title, const char *xlabel, const char *ylabel,
                             const ft_plot_series *s, int n_series) {
    ft__afile a; ft_result r; char buf[512]; int i, len; int64_t j;
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY, t, step;
    const double W = 720, H = 420, L = 70, R = 150, T = 40, B = 50;
    static const char *colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"};
    for (i = 0; i < n_series; i++)
        for (j = 0; j < s[i].n; j++) {
            if (!isfinite(s[i].y[j])) continue;
            x0 = FT__MIN(x0, s[i].x[j]); x1 = FT__MAX(x1, s[i].x[j]);
            y0 = FT__MIN(y0, s[i].y[j]); y1 = FT__MAX(y1, s[i].y[j]);
        }
    if (!(x0 <= x1)) { x0 = 0; x1 = 1; y0 = 0; y1 = 1; }
    if (x1 == x0) x1 = x0 + 1;
    if (y1 == y0) { y0 -= 0.5; y1 += 0.5; }
    if ((r = ft__afile_open(&a, path)) != FT_OK) return r;
#define FT__SVG(...) do { len = snprintf(buf, sizeof buf, __VA_ARGS__); ft__afile_write(&a, buf, (size_t)FT__MIN(len, (int)sizeof buf - 1)); } while (0)
#define FT__PX(x) (L + ((x) - x0) / (x1 - x0) * (W - L - R))
#define FT__PY(y) (H - B - ((y) - y0) / (y1 - y0) * (H - T - B))
    FT__SVG("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" font-family=\"sans-serif\" font-size=\"12\">\n", W, H);
    FT__SVG("<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n<text x=\"%.0f\" y=\"24\" font-size=\"15\">%s</text>\n", L, title);
    step = ft__nice_step((y1 - y0) / 5);
    for (t = ceil(y0 / step) * step; t <= y1 + 1e-12; t += step)
        FT__SVG("<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/><text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                L, W - R, FT__PY(t), FT__PY(t), L - 6, FT__PY(t) + 4, t);
    step = ft__nice_step((x1 - x0) / 6);
    for (t = ceil(x0 / step) * step; t <= x1 + 1e-12; t += step)
        FT__SVG("<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/><text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n",
                FT__PX(t), FT__PX(t), T, H - B, FT__PX(t), H - B + 16, t);
    FT__SVG("<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#444\"/>\n", L, T, W - L - R, H - T - B);
    FT__SVG("<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">%s</text>\n", (L + W - R) / 2, H - 12, xlabel);
    FT__SVG("<text transform=\"translate(16 %.0f) rotate(-90)\" text-anchor=\"middle\">%s</text>\n", (T + H - B) / 2, ylabel);
    for (i = 0; i < n_series; i++) {
        const char *c = colors[i % 6];
        FT__SVG("<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.6\" points=\"", c);
        for (j = 0; j < s[i].n; j++) if (isfinite(s[i].y[j])) FT__SVG("%.1f,%.1f ", FT__PX(s[i].x[j]), FT__PY(s[i].y[j]));
        FT__SVG("\"/>\n");
        if (s[i].n < 40) for (j = 0; j < s[i].n; j++) if (isfinite(s[i].y[j]))
            FT__SVG("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>\n", FT__PX(s[i].x[j]), FT__PY(s[i].y[j]), c);
        FT__SVG("<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"2\"/><text x=\"%.0f\" y=\"%d\">%s</text>\n",
                W - R + 12, W - R + 32, 50 + 18 * i, 50 + 18 * i, c, W - R + 38, 54 + 18 * i, s[i].name);
    }
    FT__SVG("</svg>\n");
#undef FT__SVG
#undef FT__PX
#undef FT__PY
    return ft__afile_commit(&a);
}

/* ============================================================================================
   [export] finetune.h's own adapter GGUF (every method), the format policy behind ft_peft_save /
   ft_peft_load (each method's llama.cpp and PEFT files are in [peft], beside its code), and
   merged models: the base GGUF rewritten with W + sBA (DoRA: m / ||W + sBA|| per row) in the
   linear weights, encoded row by row with the [quant] section's ggml-exact encoders.
   ============================================================================================ */
/* the readers and writers behind ft_peft_save / ft_peft_load, in the order they follow */
static ft_result ft__peft_attach_dir(ft_peft **out, ft_model *m, const char *dir);
static ft_result ft__own_save(ft_peft *p, const char *path);
static ft_result ft__gguf_attach(ft_peft **out, ft_model *m, const char *path);

/* ---- a whole model with the adapter merged ------------------------------------------------------------- */
FT_API int ft_save_type_ok(ft_type t) {
    return t == FT_TYPE_F32 || t == FT_TYPE_F16 || t == FT_TYPE_BF16 || t == FT_TYPE_Q8_0 || t == FT_TYPE_Q4_0 || t == FT_TYPE_Q4_1;
}
/* one f32 row of n elements into type t (n a multiple of the block) */
static void ft__merge_encode_row(ft_type t, const float *x, void *dst, int64_t n) {
    int64_t i;
    switch (t) {
    case FT_TYPE_F32: memcpy(dst, x, (size_t)n * sizeof(float)); break;
    case FT_TYPE_F16: for (i = 0; i < n; i++) FT__CAST(uint16_t *, dst)[i] = ft_fp32_to_fp16(x[i]); break;
    case FT_TYPE_BF16: for (i = 0; i < n; i++) FT__CAST(uint16_t *, dst)[i] = ft_fp32_to_bf16(x[i]); break;
    case FT_TYPE_Q8_0: ft__quant_q8_0(x, dst, n); break;
    case FT_TYPE_Q4_0: ft__quant_q4_0(x, dst, n); break;
    case FT_TYPE_Q4_1: ft__quant_q4_1(x, dst, n); break;
    default: break;
    }
}
/* rows that a 32-block type cannot hold are written as F16 (as llama-quantize falls back) */
static ft_type ft__merge_fit(ft_type t, int64_t n) { return n % ft_type_block(t) ? FT_TYPE_F16 : t; }
static int64_t ft__merge_file_type(ft_type t) {     /* llama.cpp's general.file_type (LLAMA_FTYPE_*) */
    switch (t) {
    case FT_TYPE_F32: return 0;   case FT_TYPE_F16: return 1;  case FT_TYPE_Q4_0: return 2;
    case FT_TYPE_Q4_1: return 3;  case FT_TYPE_Q8_0: return 7; case FT_TYPE_BF16: return 32;
    default: return -1;
    }
}

FT_API ft_save_opts ft_save_opts_default(void) {
    ft_save_opts o;
    memset(&o, 0, sizeof o);
    o.type = FT_TYPE_F16;                            /* what llama.cpp users load; 0 would be F32 */
    return o;
}

/* a merged model being written: the options, whether the adapter's delta is added here (add) or
   sits in the weights already (ft_peft_merge), the buffer of converted weights and a row of f32 */
typedef struct ft__merged {
    ft_model *m; ft_peft *p; ft_save_opts o; int add, emb;
    unsigned char *buf; size_t off; float *row;
} ft__merged;

static int ft__merged_is_embedding(const ft_gguf_tensor *gt) {
    return gt->n_dims == 2 && ((gt->name.n == 17 && memcmp(gt->name.s, "token_embd.weight", 17) == 0) ||
                               (gt->name.n == 13 && memcmp(gt->name.s, "output.weight", 13) == 0));
}
/* site s: the type it is written as, or FT_TYPE_COUNT when its bytes are copied unchanged */
static ft_type ft__merged_site_type(const ft__merged *x, int64_t s) {
    ft_tensor *W = *ft__site_weight(x->m, s / FT_SITE_COUNT, (int)(s % FT_SITE_COUNT));
    int has = x->add && x->p->impl->delta(x->p, s), premerged = x->p && x->p->orig && x->p->orig[s] != W;
    if (!W) return FT_TYPE_COUNT;                   /* no such weight (a mixture of experts' FFN) */
    if (x->o.keep_type && !has && !premerged) return FT_TYPE_COUNT;
    return x->o.keep_type ? (premerged ? x->p->orig[s]->type : W->type) : x->o.type;
}
/* the bytes every converted weight needs (one buffer) and the longest row; errors for types that
   cannot be written or decoded */
static ft_result ft__merged_plan(const ft__merged *x, const char *path, size_t *total, int64_t *maxin) {
    const ft_gguf *g = x->m->g; int64_t i; char name[128];
    for (i = 0; i < x->m->c.n_layer * FT_SITE_COUNT; i++) {
        ft_tensor *W = *ft__site_weight(x->m, i / FT_SITE_COUNT, (int)(i % FT_SITE_COUNT));
        ft_type t = ft__merged_site_type(x, i);
        if (t == FT_TYPE_COUNT) continue;
        snprintf(name, sizeof name, "blk.%d.%s.weight", (int)(i / FT_SITE_COUNT), ft__gguf_site_name((int)(i % FT_SITE_COUNT)));
        if (!ft_save_type_ok(t))
            return ft_set_error(FT_ERR_UNSUPPORTED, "%s: %s is %s in the base, which cannot be written here; choose f32, f16, bf16, q8_0, q4_0 or q4_1",
                                path, name, ft_type_name(t));
        *total += ft_type_row_bytes(ft__merge_fit(t, W->shape[1]), W->shape[1]) * (size_t)W->shape[0];
        *maxin = FT__MAX(*maxin, W->shape[1]);
    }
    for (i = 0; x->emb && i < ft_gguf_n_tensors(g); i++) {      /* the embedding and head as well */
        const ft_gguf_tensor *gt = ft_gguf_tensor_at(g, i);
        if (!ft__merged_is_embedding(gt)) continue;
        if (!ft__type(gt->type)->to_f32)
            return ft_set_error(FT_ERR_UNSUPPORTED, "%s: %.*s is %s, which this build cannot decode", path, (int)gt->name.n, gt->name.s, ft_type_name(gt->type));
        *total += ft_type_row_bytes(ft__merge_fit(x->o.type, gt->ne[0]), gt->ne[0]) * (size_t)gt->ne[1];
        *maxin = FT__MAX(*maxin, gt->ne[0]);
    }
    return FT_OK;
}
/* the site of a weight name ("blk.L.<site>.weight"), or -1 */
static int64_t ft__merged_site_of(const ft_model *m, const char *tn) {
    int64_t l; int which; char name[128];
    for (l = 0; l < m->c.n_layer; l++)
        for (which = 0; which < FT_SITE_COUNT; which++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", (int)l, ft__gguf_site_name(which));
            if (strcmp(tn, name) == 0) return l * FT_SITE_COUNT + which;
        }
    return -1;
}
/* site s, each row decoded, its delta added when the adapter has one there, encoded as t */
static ft_result ft__merged_site(ft__merged *x, ft_gguf_writer *w, const char *tn, int64_t s, ft_type t) {
    ft_tensor *W = *ft__site_weight(x->m, s / FT_SITE_COUNT, (int)(s % FT_SITE_COUNT));
    int has = x->add && x->p->impl->delta(x->p, s);
    int64_t out = W->shape[0], in = W->shape[1], k, ne[2];
    size_t ob;
    unsigned char *dst = x->buf + x->off;
    t = ft__merge_fit(t, in);
    ob = ft_type_row_bytes(t, in);
    for (k = 0; k < out; k++) {
        ft__weight_row(W, k, 0, in, x->row);
        if (has) x->p->impl->merge_row(x->p, s, k, x->row, in);
        ft__merge_encode_row(t, x->row, dst + (size_t)k * ob, in);
    }
    x->off += ob * (size_t)out;
    ne[0] = in;
    ne[1] = out;
    return ft_gguf_add_tensor(w, tn, t, 2, ne, dst);
}
/* the embedding or head, converted to the chosen type */
static ft_result ft__merged_embedding(ft__merged *x, ft_gguf_writer *w, const char *tn, const ft_gguf_tensor *gt) {
    ft_type t = ft__merge_fit(x->o.type, gt->ne[0]);
    size_t rb = ft_type_row_bytes(gt->type, gt->ne[0]), ob = ft_type_row_bytes(t, gt->ne[0]);
    unsigned char *dst = x->buf + x->off;
    int64_t k;
    for (k = 0; k < gt->ne[1]; k++) {
        ft__type(gt->type)->to_f32(FT__CAST(const unsigned char *, gt->data) + (size_t)k * rb, x->row, gt->ne[0]);
        ft__merge_encode_row(t, x->row, dst + (size_t)k * ob, gt->ne[0]);
    }
    x->off += ob * (size_t)gt->ne[1];
    return ft_gguf_add_tensor(w, tn, t, 2, gt->ne, dst);
}
FT_API ft_result ft_model_save_merged(ft_model *m, const char *path, const ft_save_opts *opts) {
    ft_gguf *g = m->g; ft_gguf_writer *w = NULL; ft_result r; ft__merged x; int64_t i, maxin = 1; size_t total = 0;
    memset(&x, 0, sizeof x);
    x.m = m; x.p = m->peft;
    if (opts) x.o = *opts;
    if (!x.o.keep_type && !ft_save_type_ok(x.o.type))
        return ft_set_error(FT_ERR_UNSUPPORTED, "%s: cannot write weights as %s (f32, f16, bf16, q8_0, q4_0, q4_1 can be written)", path, ft_type_name(x.o.type));
    if (x.p && x.p->enabled && !x.p->impl->merge_row)
        return ft_set_error(FT_ERR_UNSUPPORTED, "%s: a %s adapter does not change the weights, so there is nothing to merge (save it with ft_peft_save)", path, ft_peft_method_name(x.p->kind));
    if (x.p && x.p->enabled && (x.p->expA || x.p->router)) return ft_set_error(FT_ERR_UNSUPPORTED, "%s: LoRA on experts and trained routers are not merged yet (keep them as an adapter)", path);
    x.add = x.p && x.p->enabled && !x.p->orig;      /* merged in place already (ft_peft_merge): the weights hold it */
    x.emb = x.o.embeddings && !x.o.keep_type;
    if (m->c.fused && (x.add || (x.p && x.p->orig) || !x.o.keep_type))
        return ft_set_error(FT_ERR_UNSUPPORTED, "%s: writing %s's fused attn_qkv / ffn_up tensors is not supported yet (keep the adapter separate)", path, m->c.arch_name);
    if ((r = ft__merged_plan(&x, path, &total, &maxin)) != FT_OK) return r;
    x.buf = FT__CAST(unsigned char *, ft__aligned_alloc(FT__MAX(total, 1)));
    x.row = FT__CAST(float *, FT_MALLOC((size_t)maxin * sizeof(float)));
    if (!x.buf || !x.row) r = ft_set_error(FT_ERR_NOMEM, "%s: out of memory for %zu MiB of merged weights", path, total >> 20);
    if (r == FT_OK) r = ft_gguf_writer_init(&w);
    for (i = 0; i < ft_gguf_n_kv(g) && r == FT_OK; i++) r = ft_gguf_copy_kv(w, ft_gguf_kv_at(g, i));
    if (r == FT_OK && !x.o.keep_type) r = ft_gguf_set_int(w, "general.file_type", FT_GGUF_UINT32, ft__merge_file_type(x.o.type));
    for (i = 0; i < ft_gguf_n_tensors(g) && r == FT_OK; i++) {
        const ft_gguf_tensor *gt = ft_gguf_tensor_at(g, i);
        char tn[128]; size_t n = (size_t)FT__MIN(gt->name.n, sizeof tn - 1);
        int64_t s;
        ft_type t = FT_TYPE_COUNT;
        memcpy(tn, gt->name.s, n); tn[n] = 0;
        s = ft__merged_site_of(m, tn);
        if (s >= 0) t = ft__merged_site_type(&x, s);
        if (t != FT_TYPE_COUNT) r = ft__merged_site(&x, w, tn, s, t);
        else if (x.emb && ft__merged_is_embedding(gt)) r = ft__merged_embedding(&x, w, tn, gt);
        else r = ft_gguf_add_tensor(w, tn, gt->type, gt->n_dims, gt->ne, gt->data);     /* unchanged bytes */
    }
    if (r == FT_OK) r = ft_gguf_write(w, path);
    ft_gguf_writer_free(w);
    ft__aligned_free(x.buf); FT_FREE(x.row);
    return r;
}

/* ---- every method in one file of finetune.h's own: "adapter.type" = "finetune", the options as
   finetune.peft.* keys, each parameter as an F32 tensor under its own name. (LoRA keeps llama.cpp's
   format, above; this file also holds DoRA and the reward head.) ------------------------------- */
static ft_result ft__own_save(ft_peft *p, const char *path) {
    ft_gguf_writer *w; ft_result r; int i;
    if ((r = ft_gguf_writer_init(&w)) != FT_OK) return r;
    ft_gguf_set_str(w, "general.type", "adapter");
    ft_gguf_set_str(w, "general.architecture", p->m->c.arch_name);
    ft_gguf_set_str(w, "adapter.type", "finetune");
    ft_gguf_set_str(w, "finetune.peft.method", ft_peft_method_name(p->kind));
    if (p->custom) ft_gguf_set_str(w, "finetune.peft.custom", p->custom->name ? p->custom->name : "");
    if (p->kind == FT_PEFT_LORA || p->kind == FT_PEFT_LOHA) {        /* rank, alpha, sites */
        ft_gguf_set_int(w, "finetune.peft.lora.r", FT_GGUF_INT32, p->o.r);
        ft_gguf_set_float(w, "finetune.peft.lora.alpha", FT_GGUF_FLOAT32, p->o.alpha);
        ft_gguf_set_int(w, "finetune.peft.lora.targets", FT_GGUF_UINT32, p->o.targets);
        ft_gguf_set_int(w, "finetune.peft.lora.rslora", FT_GGUF_INT32, p->o.rslora);
        ft_gguf_set_int(w, "finetune.peft.lora.dora", FT_GGUF_INT32, p->o.dora);
        ft_gguf_set_int(w, "finetune.peft.lora.train_router", FT_GGUF_INT32, p->o.train_router);
    }
    ft_gguf_set_int(w, "finetune.peft.bottleneck", FT_GGUF_INT32, p->po.bottleneck);
    ft_gguf_set_int(w, "finetune.peft.placement", FT_GGUF_INT32, (int)p->po.placement);
    ft_gguf_set_int(w, "finetune.peft.act", FT_GGUF_INT32, (int)p->po.act);
    ft_gguf_set_int(w, "finetune.peft.n_virtual", FT_GGUF_INT32, p->po.n_virtual);
    ft_gguf_set_int(w, "finetune.peft.prefix_hidden", FT_GGUF_INT32, p->po.prefix_hidden);
    ft_gguf_set_int(w, "finetune.peft.ia3_targets", FT_GGUF_UINT32, p->po.ia3_targets);
    ft_gguf_set_int(w, "finetune.peft.reward_head", FT_GGUF_INT32, p->score != NULL);
    for (i = 0; i < ft_params_count(p->P) && r == FT_OK; i++) {
        ft_tensor *t = ft_params_get(p->P, i); int64_t ne[FT_MAX_DIMS]; int d;
        for (d = 0; d < t->ndim; d++) ne[d] = t->shape[t->ndim - 1 - d];    /* GGUF: innermost first */
        r = ft_gguf_add_tensor(w, t->name, FT_TYPE_F32, t->ndim, ne, t->data);
    }
    if (r == FT_OK) r = ft_gguf_write(w, path);
    ft_gguf_writer_free(w);
    return r;
}

/* the sizes in an own-format file's metadata (rank, bottleneck, virtual tokens, the prefix MLP's
   width) are dimensions of tensors it holds: checked before anything is allocated from them */
static ft_result ft__own_check_sizes(const ft_gguf *g, const ft_peft_opts *o) {
    ft_peft_method f = o->method;
    const struct { const char *key; int64_t v; int used; } sz[] = {    /* (the file keeps every option) */
        {"lora.r", o->lora.r, f == FT_PEFT_LORA || f == FT_PEFT_LOHA}, {"bottleneck", o->bottleneck, f == FT_PEFT_ADAPTER},
        {"n_virtual", o->n_virtual, f == FT_PEFT_PROMPT || f == FT_PEFT_PREFIX}, {"prefix_hidden", o->prefix_hidden, f == FT_PEFT_PREFIX},
    };
    size_t k; int64_t i; int d, found;
    if (!(fabsf(o->lora.alpha) <= FLT_MAX)) return ft_set_error(FT_ERR_NUMERIC, "%s: finetune.peft.lora.alpha is not finite", ft_gguf_path(g));
    for (k = 0; k < sizeof sz / sizeof sz[0]; k++) {
        if (sz[k].v == 0 || !sz[k].used) continue;
        for (i = 0, found = 0; i < ft_gguf_n_tensors(g) && !found && sz[k].v > 0; i++)
            for (d = 0; d < ft_gguf_tensor_at(g, i)->n_dims; d++) found |= ft_gguf_tensor_at(g, i)->ne[d] == sz[k].v;
        if (!found) return ft_set_error(FT_ERR_FORMAT, "%s: finetune.peft.%s is %lld, a dimension of none of its tensors", ft_gguf_path(g), sz[k].key, (long long)sz[k].v);
    }
    return FT_OK;
}
/* attach the method a file describes: finetune.h's own (any method) or a llama.cpp LoRA adapter.
   A full fine-tune's file holds only the trained weights (what is frozen stays the base's). */
static ft_result ft__gguf_attach(ft_peft **out, ft_model *m, const char *path) {
    ft_gguf *g; ft_result r; ft_gguf_str st; ft_peft_opts o; int64_t v, i, k; int found = 0;
    *out = NULL;
    if ((r = ft_gguf_open(&g, path)) != FT_OK) return r;
    if (!ft_gguf_get_str(g, "adapter.type", &st)) { ft_gguf_close(g); return ft_set_error(FT_ERR_FORMAT, "%s: not an adapter (no adapter.type)", path); }
    if (st.n == 4 && memcmp(st.s, "lora", 4) == 0) { ft_gguf_close(g); return ft__lora_attach_gguf(out, m, path); }
    if (st.n != 8 || memcmp(st.s, "finetune", 8) != 0 || !ft_gguf_get_str(g, "finetune.peft.method", &st)) {
        ft_gguf_close(g); return ft_set_error(FT_ERR_FORMAT, "%s: adapter.type is neither lora nor finetune", path);
    }
    memset(&o, 0, sizeof o);
    for (k = 0; k < FT_PEFT_COUNT; k++) {
        const char *nm = ft_peft_method_name((ft_peft_method)k);
        if (st.n == strlen(nm) && memcmp(st.s, nm, st.n) == 0) { o.method = (ft_peft_method)k; found = 1; }
    }
    if (!found) {                                    /* st points into g: the message first */
        r = ft_set_error(FT_ERR_FORMAT, "%s: unknown method '%.*s'", path, (int)FT__MIN(st.n, 40), st.s);
        ft_gguf_close(g);
        return r;
    }
    if (o.method == FT_PEFT_CUSTOM) {
        ft_gguf_close(g);
        return ft_set_error(FT_ERR_UNSUPPORTED, "%s: a custom method's adapter: attach the method (ft_peft_attach_custom), then ft_peft_read", path);
    }
#define FT__KV(key, dst, cast) if (ft_gguf_get_int(g, key, &v)) dst = (cast)v
    FT__KV("finetune.peft.lora.r", o.lora.r, int);
    FT__KV("finetune.peft.lora.targets", o.lora.targets, unsigned);
    FT__KV("finetune.peft.lora.rslora", o.lora.rslora, int);
    FT__KV("finetune.peft.lora.dora", o.lora.dora, int);
    FT__KV("finetune.peft.lora.train_router", o.lora.train_router, int);
    FT__KV("finetune.peft.bottleneck", o.bottleneck, int);
    FT__KV("finetune.peft.placement", o.placement, ft_adapter_place);
    FT__KV("finetune.peft.act", o.act, ft_act);
    FT__KV("finetune.peft.n_virtual", o.n_virtual, int);
    FT__KV("finetune.peft.prefix_hidden", o.prefix_hidden, int);
    FT__KV("finetune.peft.ia3_targets", o.ia3_targets, unsigned);
    FT__KV("finetune.peft.reward_head", o.reward_head, int);
#undef FT__KV
    { double a; if (ft_gguf_get_float(g, "finetune.peft.lora.alpha", &a)) o.lora.alpha = (float)a; }
    if ((r = ft__own_check_sizes(g, &o)) != FT_OK) { ft_gguf_close(g); return r; }
    if (o.method == FT_PEFT_FULL) {
        /* train exactly what the file holds: freeze every weight it does not name */
        size_t cap = 0, at = 0; char *list;
        for (i = 0; i < m->n_w; i++) if (m->w[i].name && !ft_gguf_find_tensor(g, m->w[i].name)) cap += strlen(m->w[i].name) + 1;
        list = FT__CAST(char *, FT_MALLOC(cap + 1));
        if (!list) { ft_gguf_close(g); return ft_set_error(FT_ERR_NOMEM, "%s: out of memory", path); }
        for (i = 0; i < m->n_w; i++) if (m->w[i].name && !ft_gguf_find_tensor(g, m->w[i].name)) {
            size_t n = strlen(m->w[i].name);
            memcpy(list + at, m->w[i].name, n); list[at + n] = ','; at += n + 1;
        }
        list[at] = 0;
        o.freeze = list;
        r = ft_peft_attach(out, m, &o);
        FT_FREE(list);
    } else r = ft_peft_attach(out, m, &o);
    ft_gguf_close(g);
    if (r != FT_OK) return ft_set_error(r, "%s: %s", path, ft_last_error());
    if ((r = ft_peft_read(*out, path)) != FT_OK) { ft_peft_free(*out); *out = NULL; }
    return r;
}

FT_API ft_result ft_peft_read(ft_peft *p, const char *path) {
    ft_gguf *g; ft_result r; int64_t i;
    if ((r = ft_gguf_open(&g, path)) != FT_OK) return r;
    for (i = 0; i < ft_params_count(p->P) && r == FT_OK; i++) {
        ft_tensor *t = ft_params_get(p->P, i); const ft_gguf_tensor *gt = ft_gguf_find_tensor(g, t->name); int d, ok;
        ok = gt && gt->type == FT_TYPE_F32 && gt->n_dims == t->ndim;
        for (d = 0; ok && d < t->ndim; d++) ok = gt->ne[d] == t->shape[t->ndim - 1 - d];
        if (!ok) r = ft_set_error(FT_ERR_SHAPE, "%s: tensor %s is %s", path, t->name, gt ? "of another type or shape than the model needs" : "missing");
        else { memcpy(t->data, gt->data, (size_t)ft_numel(t) * sizeof(float)); t->version++; }
    }
    ft_gguf_close(g);
    if (r == FT_OK && p->full && p->enabled) ft__full_install(p, 1);     /* headers carry the loaded values */
    return r;
}

/* a PEFT directory: the method whose peft_type adapter_config.json names (none: LORA) reads it */
static ft_result ft__peft_attach_dir(ft_peft **out, ft_model *m, const char *dir) {
    ft_json_doc *doc; const ft_json *v; ft_result r; int k; char type[64] = "LORA";
    *out = NULL;
    if ((r = ft__peft_read_config(dir, &doc)) != FT_OK) return r;
    v = ft_json_get(ft_json_root(doc), "peft_type");
    if (v && v->kind == FT_JSON_STRING) snprintf(type, sizeof type, "%s", v->s);
    ft_json_free(doc);
    for (k = 0; k < FT_PEFT_COUNT; k++) {
        const ft__peft_impl *impl = ft__peft_impl_of((ft_peft_method)k);
        if (impl->peft_type && strcmp(impl->peft_type, type) == 0) return impl->load_peft(out, m, dir);
    }
    return ft_set_error(FT_ERR_UNSUPPORTED, "%s/adapter_config.json: peft_type %s (LORA, LOHA, IA3, PROMPT_TUNING and PREFIX_TUNING are read)", dir, type);
}

/* ---- one save, one load: the format policy ------------------------------------------------------- */
FT_API ft_result ft_peft_can_save(const ft_peft *p, ft_adapter_format f) {
    int lora = p->kind == FT_PEFT_LORA, edge = p->emb_A || p->head_A;
    switch (f) {
    case FT_FORMAT_AUTO:
    case FT_FORMAT_FINETUNE:
        return FT_OK;
    case FT_FORMAT_LLAMACPP:
        if (!lora) return ft_set_error(FT_ERR_UNSUPPORTED, "llama.cpp's adapters are LoRA; a %s adapter goes into finetune.h's own GGUF", ft_peft_method_name(p->kind));
        if (p->o.dora) return ft_set_error(FT_ERR_UNSUPPORTED, "llama.cpp's LoRA GGUF has no DoRA magnitudes: finetune.h's own GGUF or a PEFT directory");
        if (edge) return ft_set_error(FT_ERR_UNSUPPORTED, "llama.cpp's LoRA GGUF holds the linear layers only, not LoRA on the embedding or the head");
        break;
    case FT_FORMAT_PEFT:
        if (!p->impl->save_peft)
            return ft_set_error(FT_ERR_UNSUPPORTED, "PEFT has no %s", p->kind == FT_PEFT_ADAPTER ? "bottleneck adapters (Houlsby / Pfeiffer)" :
                                p->kind == FT_PEFT_FULL ? "full fine-tuning form" : "form of a method of your own");
        if (edge) return ft_set_error(FT_ERR_UNSUPPORTED, "LoRA on the embedding or the head is kept in finetune.h's own GGUF");
        break;
    default:
        return ft_set_error(FT_ERR_INVALID, "adapter format %d", (int)f);
    }
    if (p->expA || p->router) return ft_set_error(FT_ERR_UNSUPPORTED, "LoRA on experts and trained routers in a %s adapter are not supported yet: finetune.h's own GGUF keeps them", f == FT_FORMAT_PEFT ? "PEFT" : "llama.cpp");
    if (p->m->c.fused)          /* their q, k, v (gate, up) live in one tensor there: attn_qkv, qkv_proj */
        return ft_set_error(FT_ERR_UNSUPPORTED, "%s's fused qkv / gate_up layers in a %s adapter are not supported yet: finetune.h's own GGUF keeps it",
                            p->m->c.arch_name, f == FT_FORMAT_PEFT ? "PEFT" : "llama.cpp");
    if (p->score) return ft_set_error(FT_ERR_UNSUPPORTED, "the reward / value head has no place in a %s adapter: finetune.h's own GGUF keeps it",
                                      f == FT_FORMAT_PEFT ? "PEFT (causal LM)" : "llama.cpp");
    return FT_OK;
}

FT_API ft_result ft_peft_save(ft_peft *p, const char *path, ft_adapter_format f, const char *base_model_name) {
    char name[256];
    ft_gguf_str gn;
    ft_result r;
    if (!p->m) return ft_set_error(FT_ERR_STATE, "%s: the adapter's model was freed", path);
    if (f == FT_FORMAT_AUTO) f = ft_peft_can_save(p, FT_FORMAT_LLAMACPP) == FT_OK ? FT_FORMAT_LLAMACPP : FT_FORMAT_FINETUNE;
    if ((r = ft_peft_can_save(p, f)) != FT_OK) return ft_set_error(r, "%s: %s", path, ft_last_error());
    if ((r = ft__params_finite(p->P, "not written")) != FT_OK) return ft_set_error(r, "%s: %s", path, ft_last_error());
    if (f == FT_FORMAT_LLAMACPP) return ft__lora_save_gguf(p, path);
    if (f == FT_FORMAT_FINETUNE) return ft__own_save(p, path);
    if (!base_model_name) {                          /* PEFT's base_model_name_or_path */
        if (ft_gguf_get_str(p->m->g, "general.name", &gn)) snprintf(name, sizeof name, "%.*s", (int)FT__MIN(gn.n, sizeof name - 1), gn.s);
        else snprintf(name, sizeof name, "%s", p->m->c.arch_name);
        base_model_name = name;
    }
    return p->impl->save_peft(p, path, base_model_name);
}

/* a PEFT directory (it has adapter_config.json), a llama.cpp LoRA GGUF or finetune.h's own adapter GGUF */
FT_API ft_result ft_peft_load(ft_peft **out, ft_model *m, const char *path) {
    struct stat st;
    ft_result r;
    char file[1024];
    *out = NULL;
    snprintf(file, sizeof file, "%s", path);
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        r = ft__peft_attach_dir(out, m, path);
        snprintf(file, sizeof file, "%s/adapter_model.safetensors", path);
    } else r = ft__gguf_attach(out, m, path);       /* llama.cpp's LoRA, or finetune.h's own (any method) */
    if (r == FT_OK && (r = ft__params_finite((*out)->P, file)) != FT_OK) {
        ft_peft_free(*out);
        *out = NULL;
    }
    return r;
}

/* ============================================================================================
   [synth] synthetic instruction data with the model itself as the generator:
   Self-Instruct (Wang et al., 2023) and Evol-Instruct (Xu et al., WizardLM, 2023)
   ROUGE-L: rouge_score 0.1.2's rougeL fmeasure, default tokenizer (tokenize.py): lowercase (the
     only non-ASCII characters whose lowercase is ASCII, U+0130 and U+212A, give "i" and "k"),
     every run of characters other than a-z 0-9 separates; LCS of the token lists (_score_lcs):
     P = lcs / |b|, R = lcs / |a|, F = 2PR / (P + R), 0 when either list is empty.
   Self-Instruct: the assistant's reply starts as a numbered list of k tasks (seeds and earlier
     outputs); the model continues with number k + 1; the parsed items go through the filters
     (format, length, keyword, duplicate, ROUGE-L >= 0.7 against the pool), then the model
     answers each; a kept pair is appended to the output and its instruction joins the pool.
   Evol-Instruct: an instruction of the pool is rewritten with one of the in-depth operations
     (constraints, deepen, concretize, reasoning, complicate input) or the in-breadth mutation;
     elimination: the rewriting prompt's words copied, no new information (ROUGE-L with the
     original >= evol_rouge), an answer that failed. Survivors join the pool and evolve again.
   The prompts are this file's own wording.
   ============================================================================================ */
#ifndef FT_NO_SYNTH

static int64_t ft__rouge_norm(const char *s, char *out) {     /* lowercase, non-alnum -> ' ' */
    const unsigned char *p = (const unsigned char *)s; int64_t n = 0;
    while (*p) {
        unsigned c;
        if (p[0] == 0xC4 && p[1] == 0xB0) { out[n++] = 'i'; out[n++] = ' '; p += 2; continue; }   /* İ -> i + U+0307 */
        if (p[0] == 0xE2 && p[1] == 0x84 && p[2] == 0xAA) { out[n++] = 'k'; p += 3; continue; }     /* Kelvin sign -> k */
        c = *p++;
        if (c >= 'A' && c <= 'Z') c += 32;
        out[n++] = (char)(((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) ? c : ' ');
    }
    out[n] = 0;
    return n;
}
typedef struct ft__rtok { char *text; int64_t *off, *len, n; } ft__rtok;
static int ft__rouge_tokens(ft__rtok *t, const char *s) {
    int64_t L = (int64_t)strlen(s), i = 0;
    t->text = FT__CAST(char *, FT_MALLOC((size_t)L + 2));
    t->off = FT__CAST(int64_t *, FT_MALLOC(sizeof(int64_t) * (size_t)(L / 2 + 2)));
    t->len = FT__CAST(int64_t *, FT_MALLOC(sizeof(int64_t) * (size_t)(L / 2 + 2)));
    t->n = 0;
    if (!t->text || !t->off || !t->len) return 0;
    L = ft__rouge_norm(s, t->text);
    while (i < L) {
        int64_t a;
        while (i < L && t->text[i] == ' ') i++;
        if (i >= L) break;
        a = i;
        while (i < L && t->text[i] != ' ') i++;
        t->off[t->n] = a; t->len[t->n] = i - a; t->n++;
    }
    return 1;
}
static void ft__rouge_free(ft__rtok *t) { FT_FREE(t->text); FT_FREE(t->off); FT_FREE(t->len); }
static int ft__rtok_eq(const ft__rtok *a, int64_t i, const ft__rtok *b, int64_t j) {
    return a->len[i] == b->len[j] && memcmp(a->text + a->off[i], b->text + b->off[j], (size_t)a->len[i]) == 0;
}

FT_API double ft_rouge_l(const char *a, const char *b) {
    ft__rtok A, B; int64_t *prev = NULL, *cur = NULL, i, j, lcs; double r = 0;
    if (!a || !b) return 0;
    memset(&A, 0, sizeof A); memset(&B, 0, sizeof B);
    if (!ft__rouge_tokens(&A, a) || !ft__rouge_tokens(&B, b) || A.n == 0 || B.n == 0) goto done;
    prev = FT__CAST(int64_t *, FT_MALLOC(sizeof(int64_t) * (size_t)(B.n + 1)));
    cur = FT__CAST(int64_t *, FT_MALLOC(sizeof(int64_t) * (size_t)(B.n + 1)));
    if (!prev || !cur) goto done;
    for (j = 0; j <= B.n; j++) prev[j] = 0;
    for (i = 1; i <= A.n; i++) {                                /* _lcs_table, two rows at a time */
        int64_t *t;
        cur[0] = 0;
        for (j = 1; j <= B.n; j++)
            cur[j] = ft__rtok_eq(&A, i - 1, &B, j - 1) ? prev[j - 1] + 1 : FT__MAX(prev[j], cur[j - 1]);
        t = prev; prev = cur; cur = t;
    }
    lcs = prev[B.n];
    {
        double p = (double)lcs / (double)B.n, rc = (double)lcs / (double)A.n;
        r = p + rc > 0 ? 2 * p * rc / (p + rc) : 0.0;
    }
done:
    FT_FREE(prev); FT_FREE(cur); ft__rouge_free(&A); ft__rouge_free(&B);
    return r;
}

FT_API const char *ft_synth_reason_name(ft_synth_reason r) {
    static const char *n[FT_SYNTH_REASON_COUNT] = {"kept", "format", "too_short", "too_long", "keyword", "copied",
                                                    "no_new_info", "duplicate", "similar", "bad_answer"};
    return (int)r >= 0 && (int)r < FT_SYNTH_REASON_COUNT ? n[r] : "?";
}
FT_API const char *ft_synth_evol_op_name(int op) {
    static const char *n[6] = {"constraints", "deepen", "concretize", "reasoning", "complicate_input", "breadth"};
    return op >= 0 && op < 6 ? n[op] : "?";
}
FT_API void ft_synth_texts_free(char **t, int64_t n) {
    int64_t i;
    if (!t) return;
    for (i = 0; i < n; i++) { FT_FREE(t[i]); t[i] = NULL; }
}

FT_API ft_synth_opts ft_synth_opts_default(ft_synth_method method) {
    ft_synth_opts o;
    memset(&o, 0, sizeof o);
    o.method = method;
    o.batch = 4;
    o.max_new = 64;
    o.max_new_answer = 160;
    o.sample.temperature = 0.7f;
    o.sample.top_p = 0.9f;
    o.seed = 1;
    o.rouge = 0.7f;
    o.evol_rouge = 0.9f;
    o.min_words = 3;
    o.max_words = 150;
    o.min_answer_words = 1;
    o.few_shot = 4;
    o.few_shot_generated = 1;
    return o;
}
/* a zero field takes its default (the sampling options are taken as given: 0 is greedy) */
static ft_synth_opts ft__synth_defaults(const ft_synth_opts *in) {
    ft_synth_opts o, d = ft_synth_opts_default(in ? in->method : FT_SYNTH_SELF_INSTRUCT);
    if (in) o = *in; else o = d;
    if (o.batch < 1) o.batch = d.batch;
    if (o.max_new < 1) o.max_new = d.max_new;
    if (o.max_new_answer < 1) o.max_new_answer = d.max_new_answer;
    if (o.rouge <= 0) o.rouge = d.rouge;
    if (o.evol_rouge <= 0) o.evol_rouge = d.evol_rouge;
    if (o.min_words < 1) o.min_words = d.min_words;
    if (o.max_words < 1) o.max_words = d.max_words;
    if (o.min_answer_words < 1) o.min_answer_words = d.min_answer_words;
    if (o.few_shot < 1) o.few_shot = d.few_shot;
    if (o.few_shot_generated == 0) o.few_shot_generated = 1;      /* < 0: none */
    else if (o.few_shot_generated < 0) o.few_shot_generated = 0;
    if (o.few_shot_generated > o.few_shot) o.few_shot_generated = o.few_shot;
    return o;
}

static int64_t ft__count_words(const char *s) {               /* whitespace-separated, as str.split() */
    int64_t n = 0; int in = 0;
    for (; *s; s++) {
        int sp = *s == ' ' || (*s >= '\t' && *s <= '\r');
        if (!sp && !in) n++;
        in = !sp;
    }
    return n;
}
static int ft__has_letter(const char *s) {
    for (; *s; s++) if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')) return 1;
    return 0;
}
static int ft__has_alnum(const char *s) {
    for (; *s; s++) if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9')) return 1;
    return 0;
}
static int ft__contains_ci(const char *h, const char *needle) {  /* ASCII case-insensitive strstr */
    size_t n = strlen(needle), i;
    for (; *h; h++) {
        for (i = 0; i < n; i++) {
            int a = (unsigned char)h[i], b = (unsigned char)needle[i];
            if (a >= 'A' && a <= 'Z') a += 32;
            if (b >= 'A' && b <= 'Z') b += 32;
            if (a != b) break;
        }
        if (i == n) return 1;
    }
    return 0;
}
/* a whole word or phrase of `w` in s: both normalised as ROUGE's tokens, joined by single spaces */
static int ft__has_word(const char *s, const char *w) {
    ft__rtok A, B; int64_t i, j; int hit = 0;
    memset(&A, 0, sizeof A); memset(&B, 0, sizeof B);
    if (!ft__rouge_tokens(&A, s) || !ft__rouge_tokens(&B, w) || B.n == 0) { ft__rouge_free(&A); ft__rouge_free(&B); return 0; }
    for (i = 0; i + B.n <= A.n && !hit; i++) {
        for (j = 0; j < B.n; j++) if (!ft__rtok_eq(&A, i + j, &B, j)) break;
        hit = j == B.n;
    }
    ft__rouge_free(&A); ft__rouge_free(&B);
    return hit;
}

static const char *ft__synth_blacklist[] = {"image", "images", "picture", "pictures", "graph", "graphs", "file", "files",
                                            "map", "maps", "draw", "plot", "go to", "video", "audio", "music",
                                            "flowchart", "diagram"};
/* the words of the evolution prompts below; an evolution that repeats them is eliminated */
static const char *ft__synth_copy_words[] = {"rewrite the task", "rewritten", "new version", "the task", "this task", "given task",
                                             "original task", "new task", "reply with", "given prompt"};

FT_API ft_synth_reason ft_synth_check_instruction(const char *inst, const char *original,
                                                  const char *const *pool, int64_t n_pool,
                                                  const ft_synth_opts *opts, double *max_rouge) {
    ft_synth_opts o = ft__synth_defaults(opts);
    const char *const *bl = o.blacklist ? o.blacklist : ft__synth_blacklist;
    int nbl = o.blacklist ? o.n_blacklist : (int)(sizeof ft__synth_blacklist / sizeof *ft__synth_blacklist);
    int64_t w, i; unsigned char c0; double best = 0;
    if (max_rouge) *max_rouge = 0;
    if (!inst) return FT_SYNTH_FORMAT;
    c0 = (unsigned char)inst[0];
    if (!ft__has_letter(inst) || !((c0 >= 'a' && c0 <= 'z') || (c0 >= 'A' && c0 <= 'Z') || (c0 >= '0' && c0 <= '9')))
        return FT_SYNTH_FORMAT;
    w = ft__count_words(inst);
    if (w < o.min_words) return FT_SYNTH_TOO_SHORT;
    if (w > o.max_words) return FT_SYNTH_TOO_LONG;
    for (i = 0; i < nbl; i++) if (bl[i] && ft__has_word(inst, bl[i])) return FT_SYNTH_KEYWORD;
    if (original) {
        for (i = 0; i < (int64_t)(sizeof ft__synth_copy_words / sizeof *ft__synth_copy_words); i++)
            if (ft__contains_ci(inst, ft__synth_copy_words[i])) return FT_SYNTH_COPIED;
        if (ft_rouge_l(original, inst) >= o.evol_rouge) return FT_SYNTH_NO_NEW_INFO;
    }
    for (i = 0; i < n_pool; i++) {
        double r;
        if (!pool[i] || (original && strcmp(pool[i], original) == 0)) continue;
        r = ft_rouge_l(pool[i], inst);
        if (r > best) best = r;
        if (r >= 1.0) { if (max_rouge) *max_rouge = r; return FT_SYNTH_DUPLICATE; }
    }
    if (max_rouge) *max_rouge = best;
    return best >= o.rouge ? FT_SYNTH_SIMILAR : FT_SYNTH_KEPT;
}

FT_API ft_synth_reason ft_synth_check_answer(const char *answer, const char *instruction, const ft_synth_opts *opts) {
    ft_synth_opts o = ft__synth_defaults(opts); int64_t w;
    if (!answer || !ft__has_alnum(answer)) return FT_SYNTH_BAD_ANSWER;
    w = ft__count_words(answer);
    if (w < o.min_answer_words) return FT_SYNTH_BAD_ANSWER;
    if (w < 80 && (ft__contains_ci(answer, "sorry") || ft__contains_ci(answer, "as an ai"))) return FT_SYNTH_BAD_ANSWER;
    if (instruction && ft_rouge_l(instruction, answer) >= 1.0) return FT_SYNTH_BAD_ANSWER;     /* an echo */
    return FT_SYNTH_KEPT;
}

/* s[0..n) trimmed, without surrounding quotes or markdown bold, as a new string */
static char *ft__synth_clean(const char *s, size_t n) {
    size_t a = 0, e = n; int again = 1;
    while (again) {
        again = 0;
        while (a < e && (s[a] == ' ' || (s[a] >= '\t' && s[a] <= '\r'))) a++;
        while (e > a && (s[e - 1] == ' ' || (s[e - 1] >= '\t' && s[e - 1] <= '\r'))) e--;
        if (e - a >= 4 && s[a] == '*' && s[a + 1] == '*' && s[e - 1] == '*' && s[e - 2] == '*') { a += 2; e -= 2; again = 1; }
        else if (e - a >= 2 && ((s[a] == '"' && s[e - 1] == '"') || (s[a] == '\'' && s[e - 1] == '\''))) { a++; e--; again = 1; }
    }
    return ft__strndup(s + a, e - a);
}

FT_API int ft_synth_parse_list(const char *text, int first, int truncated, char **out, int cap) {
    const char *p = text; int n = 0, line_no = 0, ended = 0;
    (void)first;
    if (!text || !out || cap < 1) return 0;
    while (*p) {
        if (n == cap) { ended = 1; break; }
        const char *e = strchr(p, '\n'), *q = p, *body;
        size_t len = e ? (size_t)(e - p) : strlen(p);
        while (q < p + len && (*q == ' ' || *q == '\t' || *q == '\r')) q++;
        body = q;
        if (q < p + len && *q >= '0' && *q <= '9') {                 /* "N." or "N)" starts an item */
            const char *d = q;
            while (d < p + len && *d >= '0' && *d <= '9') d++;
            if (d < p + len && (*d == '.' || *d == ')')) body = d + 1;
            else if (line_no > 0) { ended = 1; break; }
        } else if (line_no > 0 && q < p + len) { ended = 1; break; } /* unnumbered text: the list ended */
        if (body < p + len || line_no == 0) {
            char *it = ft__synth_clean(body, (size_t)(p + len - body));
            if (it && it[0]) out[n++] = it; else FT_FREE(it);
        }
        line_no++;
        if (!e) break;
        p = e + 1;
    }
    if (truncated && !ended && n > 0) { FT_FREE(out[n - 1]); out[--n] = NULL; }   /* cut off mid-item */
    return n;
}

/* keep only valid UTF-8 (a truncated generation can end inside a character) */
static void ft__utf8_sanitize(char *s) {
    unsigned char *r = (unsigned char *)s, *w = (unsigned char *)s, *end = (unsigned char *)s + strlen(s);
    while (r < end) {
        int k = ft_utf8_len(r, end);
        if (k <= 0) { r++; continue; }
        if (k == 1 && *r < 0x20 && *r != '\n' && *r != '\t') { r++; continue; }   /* stray controls */
        memmove(w, r, (size_t)k); w += k; r += k;
    }
    *w = 0;
}

FT_API ft_result ft_synth_generate(ft_ctx *ctx, ft_model *m, int64_t n, const char *const *user,
                                   const char *const *prefill, const char *system, int max_new,
                                   const ft_sample_opts *s, ft_rng *rng, char **out, int *truncated) {
    const ft_tokenizer *tok = m ? ft_model_tokenizer(m) : NULL;
    const char *tmpl = m ? ft_model_chat_template(m) : NULL;
    int32_t **ids = NULL, *gen = NULL, stop[FT_MAX_STOP]; int64_t *len = NULL, *glen = NULL, i, maxlen = 0; int ns = 0;
    ft_kv_cache *kv = NULL; ft_gen_opts go; ft_result r = FT_OK; char *text = NULL;
    if (!ctx || !m || n < 1 || !user || !out || max_new < 1) return ft_set_error(FT_ERR_INVALID, "ft_synth_generate: bad arguments");
    if (!tok) return ft_set_error(FT_ERR_INVALID, "ft_synth_generate: the model has no tokenizer");
    for (i = 0; i < n; i++) out[i] = NULL;
    ids = FT__CAST(int32_t **, FT_MALLOC(sizeof(int32_t *) * (size_t)n));
    len = FT__CAST(int64_t *, FT_MALLOC(sizeof(int64_t) * (size_t)n));
    glen = FT__CAST(int64_t *, FT_MALLOC(sizeof(int64_t) * (size_t)n));
    gen = FT__CAST(int32_t *, FT_MALLOC(sizeof(int32_t) * (size_t)n * (size_t)max_new));
    if (!ids || !len || !glen || !gen) { r = ft_set_error(FT_ERR_NOMEM, "ft_synth_generate: out of memory"); goto done; }
    for (i = 0; i < n; i++) ids[i] = NULL;
    for (i = 0; i < n; i++) {                                       /* render, tokenize */
        ft_chat_msg msg[2]; int nm = 0; int64_t L, P = prefill && prefill[i] ? (int64_t)strlen(prefill[i]) : 0, k;
        if (system) { msg[nm].role = "system"; msg[nm].content = system; nm++; }
        msg[nm].role = "user"; msg[nm].content = user[i] ? user[i] : ""; nm++;
        L = ft_chat_apply(tmpl, msg, nm, 1, NULL, 0);
        if (L < 0) { r = (ft_result)L; goto done; }
        text = FT__CAST(char *, FT_MALLOC((size_t)(L + P + 1)));
        if (!text) { r = ft_set_error(FT_ERR_NOMEM, "ft_synth_generate: out of memory"); goto done; }
        ft_chat_apply(tmpl, msg, nm, 1, text, L + 1);
        if (P) memcpy(text + L, prefill[i], (size_t)P);
        text[L + P] = 0;
        k = ft_tokenize(tok, text, L + P, NULL, 0, 1, 1);
        if (k < 1) { r = k < 0 ? (ft_result)k : ft_set_error(FT_ERR_INVALID, "ft_synth_generate: prompt %lld has no tokens", (long long)i); goto done; }
        ids[i] = FT__CAST(int32_t *, FT_MALLOC(sizeof(int32_t) * (size_t)k));
        if (!ids[i]) { r = ft_set_error(FT_ERR_NOMEM, "ft_synth_generate: out of memory"); goto done; }
        ft_tokenize(tok, text, L + P, ids[i], k, 1, 1);
        len[i] = k; if (k > maxlen) maxlen = k;
        FT_FREE(text); text = NULL;
    }
    if ((r = ft_kv_cache_init(&kv, m, n, maxlen + max_new)) != FT_OK) goto done;
    memset(&go, 0, sizeof go);
    go.max_new = max_new; if (s) go.sample = *s;
    ns = ft_tokenizer_stop_ids(tok, stop);
    go.stop = stop; go.n_stop = ns;
    if ((r = ft_generate(ctx, m, kv, n, (const int32_t *const *)ids, len, &go, rng, gen, glen, NULL)) != FT_OK) goto done;
    for (i = 0; i < n; i++) {
        const int32_t *g = gen + i * max_new; int64_t gl = glen[i], L; int stopped = 0, k;
        for (k = 0; k < ns; k++) if (gl > 0 && g[gl - 1] == stop[k]) stopped = 1;
        if (stopped) gl--;
        if (truncated) truncated[i] = !stopped && glen[i] >= max_new;
        L = gl > 0 ? ft_detokenize(tok, g, gl, NULL, 0, 0) : 0;
        if (L < 0) { r = (ft_result)L; goto done; }
        out[i] = FT__CAST(char *, FT_MALLOC((size_t)L + 1));
        if (!out[i]) { r = ft_set_error(FT_ERR_NOMEM, "ft_synth_generate: out of memory"); goto done; }
        if (gl > 0) ft_detokenize(tok, g, gl, out[i], L + 1, 0);
        out[i][L] = 0;
        ft__utf8_sanitize(out[i]);
    }
done:
    if (r != FT_OK) ft_synth_texts_free(out, n);
    if (ids) for (i = 0; i < n; i++) FT_FREE(ids[i]);
    FT_FREE(ids); FT_FREE(len); FT_FREE(glen); FT_FREE(gen); FT_FREE(text);
    ft_kv_cache_free(kv);
    return r;
}

/* ---- the pipelines' shared state: the pool of instructions, the output file ---- */
typedef struct ft__synth {
    ft_synth_opts o; ft_synth_stats *st;
    char **pool; int64_t n_pool, cap_pool, n_seed;
    char **seed_input;              /* (n_seed) the seeds' inputs ("" if none)                    */
    int64_t have;                   /* lines in the output                                        */
    FILE *f; const char *out_path;
    ft_rng rng; double t0;
} ft__synth;

static ft_result ft__synth_pool_add(ft__synth *S, const char *s) {
    if (S->n_pool == S->cap_pool) {
        int64_t c = S->cap_pool ? 2 * S->cap_pool : 64;
        char **p = FT__CAST(char **, FT_REALLOC(S->pool, sizeof(char *) * (size_t)c));
        if (!p) return ft_set_error(FT_ERR_NOMEM, "synth: out of memory");
        S->pool = p; S->cap_pool = c;
    }
    if (!(S->pool[S->n_pool] = ft__strdup(s))) return ft_set_error(FT_ERR_NOMEM, "synth: out of memory");
    S->n_pool++;
    return FT_OK;
}

static void ft__synth_free(ft__synth *S) {
    int64_t i;
    for (i = 0; i < S->n_pool; i++) FT_FREE(S->pool[i]);
    for (i = 0; i < S->n_seed && S->seed_input; i++) FT_FREE(S->seed_input[i]);
    FT_FREE(S->pool); FT_FREE(S->seed_input);
    if (S->f) fclose(S->f);
}

/* seeds, then the output file's instructions (resume), then the output opened for appending */
static ft_result ft__synth_open(ft__synth *S, const char *seed_path, const char *out_path, const ft_synth_opts *o, ft_synth_stats *st) {
    ft_jsonl *jl; ft_json_doc *d; ft_result r; FILE *f; int last = '\n';
    memset(S, 0, sizeof *S);
    S->o = ft__synth_defaults(o); S->st = st; S->out_path = out_path; S->t0 = ft_time_seconds();
    memset(st, 0, sizeof *st);
    if (!seed_path || !out_path) return ft_set_error(FT_ERR_INVALID, "synth: a seed file and an output file are needed");
    if (S->o.n < 1) return ft_set_error(FT_ERR_INVALID, "synth: n = %lld examples requested", (long long)S->o.n);
    if ((r = ft_jsonl_open(&jl, seed_path)) != FT_OK) return r;
    for (;;) {
        const char *ins, *inp; char **si;
        if ((r = ft_jsonl_next(jl, &d)) != FT_OK) { ft_jsonl_close(jl); return r; }
        if (!d) break;
        ins = ft__jstr(ft_json_root(d), "instruction"); inp = ft__jstr(ft_json_root(d), "input");
        if (!ins || !ins[0]) {
            r = ft_set_error(FT_ERR_FORMAT, "%s:%lld: a seed task needs a non-empty string \"instruction\"", seed_path, (long long)ft_jsonl_line(jl));
            ft_json_free(d); ft_jsonl_close(jl); return r;
        }
        if ((r = ft__synth_pool_add(S, ins)) != FT_OK) { ft_json_free(d); ft_jsonl_close(jl); return r; }
        si = FT__CAST(char **, FT_REALLOC(S->seed_input, sizeof(char *) * (size_t)S->n_pool));
        if (!si) { ft_json_free(d); ft_jsonl_close(jl); return ft_set_error(FT_ERR_NOMEM, "synth: out of memory"); }
        S->seed_input = si; si[S->n_pool - 1] = ft__strdup(inp ? inp : "");
        S->n_seed = S->n_pool;
        ft_json_free(d);
    }
    ft_jsonl_close(jl);
    if (S->n_seed == 0) return ft_set_error(FT_ERR_FORMAT, "%s: no seed tasks", seed_path);
    if ((f = fopen(out_path, "rb")) != NULL) {                   /* resume */
        long sz;
        fseek(f, 0, SEEK_END); sz = ftell(f);
        if (sz > 0) { fseek(f, sz - 1, SEEK_SET); last = fgetc(f); }
        fclose(f);
        if (sz > 0) {
            if ((r = ft_jsonl_open(&jl, out_path)) != FT_OK) return r;
            for (;;) {
                const char *ins;
                if ((r = ft_jsonl_next(jl, &d)) != FT_OK) { ft_jsonl_close(jl); return r; }
                if (!d) break;
                ins = ft__jstr(ft_json_root(d), "instruction");
                if (!ins) {
                    r = ft_set_error(FT_ERR_FORMAT, "%s:%lld: an output line without a string \"instruction\" (not this tool's file?)", out_path, (long long)ft_jsonl_line(jl));
                    ft_json_free(d); ft_jsonl_close(jl); return r;
                }
                r = ft__synth_pool_add(S, ins);
                ft_json_free(d);
                if (r != FT_OK) { ft_jsonl_close(jl); return r; }
                S->have++;
            }
            ft_jsonl_close(jl);
        }
    }
    st->resumed = S->have;
    if ((r = ft_mkdirs_parent(out_path)) != FT_OK) return r;
    if (!(S->f = fopen(out_path, "ab"))) return ft_set_error(FT_ERR_IO, "%s: cannot open for appending: %s", out_path, strerror(errno));
    if (last != '\n') fputc('\n', S->f);                          /* a last line without its newline */
    ft_rng_seed(&S->rng, S->o.seed ^ ((uint64_t)S->have * 0x9E3779B97F4A7C15ull));   /* a resumed run draws anew */
    if (S->o.max_generated < 1) S->o.max_generated = 20 * (S->o.n - S->have) + 20;
    return FT_OK;
}

static void ft__json_put(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { fputc('\\', f); fputc(c, f); }
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c == '\r') fputs("\\r", f);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}
static ft_result ft__synth_write(ft__synth *S, const char *ins, const char *out, const char *evol) {
    fputs("{\"instruction\": ", S->f); ft__json_put(S->f, ins);
    fputs(", \"input\": \"\", \"output\": ", S->f); ft__json_put(S->f, out);
    if (evol) { fputs(", \"evol\": ", S->f); ft__json_put(S->f, evol); }
    fputs("}\n", S->f);
    if (fflush(S->f) != 0 || ferror(S->f)) return ft_set_error(FT_ERR_IO, "%s: write failed", S->out_path);
    S->have++; S->st->kept++;
    return FT_OK;
}
static void ft__synth_progress(ft__synth *S) {
    char msg[512]; int k, n;
    S->st->seconds = ft_time_seconds() - S->t0;
    if (!S->o.log) return;
    n = snprintf(msg, sizeof msg, "synth: %lld/%lld examples, generated %lld, kept %lld, %.0f s; rejected:",
                 (long long)S->have, (long long)S->o.n, (long long)S->st->generated, (long long)S->st->kept, S->st->seconds);
    for (k = 1; k < FT_SYNTH_REASON_COUNT && n > 0 && n < (int)sizeof msg; k++)
        if (S->st->rejected[k]) n += snprintf(msg + n, sizeof msg - (size_t)n, " %s %lld", ft_synth_reason_name((ft_synth_reason)k), (long long)S->st->rejected[k]);
    S->o.log(S->o.log_user, 0, msg);
}

/* answers cand[0..nc-1] in batches, writes the good ones (until o.n) */
static ft_result ft__synth_answer(ft__synth *S, ft_ctx *ctx, ft_model *m, char **cand, const int *ops, int64_t nc) {
    int64_t i0, i; ft_result r = FT_OK;
    char **ans = FT__CAST(char **, FT_MALLOC(sizeof(char *) * (size_t)S->o.batch));
    if (!ans) return ft_set_error(FT_ERR_NOMEM, "synth: out of memory");
    for (i0 = 0; i0 < nc && S->have < S->o.n && r == FT_OK; i0 += S->o.batch) {
        int64_t b = FT__MIN((int64_t)S->o.batch, nc - i0);
        if ((r = ft_synth_generate(ctx, m, b, (const char *const *)cand + i0, NULL, NULL, S->o.max_new_answer,
                                   &S->o.sample, &S->rng, ans, NULL)) != FT_OK) break;
        S->st->calls++;
        for (i = 0; i < b && r == FT_OK; i++) {
            char *a = ft__synth_clean(ans[i], strlen(ans[i]));
            if (S->have >= S->o.n) { FT_FREE(a); break; }
            if (ft_synth_check_answer(a, cand[i0 + i], &S->o) != FT_SYNTH_KEPT) S->st->rejected[FT_SYNTH_BAD_ANSWER]++;
            else {
                r = ft__synth_write(S, cand[i0 + i], a, ops ? ft_synth_evol_op_name(ops[i0 + i]) : NULL);
                if (ops && r == FT_OK) S->st->evol_ops[ops[i0 + i]]++;
            }
            FT_FREE(a);
        }
        ft_synth_texts_free(ans, b);
    }
    FT_FREE(ans);
    return r;
}

static const char *ft__synth_list_task =
    "Write a numbered list of short, varied tasks that someone could ask a helpful text assistant to do. "
    "Each item is one self-contained instruction; the tasks differ in topic and kind (questions, writing, "
    "rewriting, classifying, math, advice, explaining).";

FT_API ft_result ft_synth_self_instruct(ft_ctx *ctx, ft_model *m, const char *seed_path, const char *out_path,
                                        const ft_synth_opts *o, ft_synth_stats *st) {
    ft__synth S; ft_result r; int64_t i, b;
    char **user = NULL, **pre = NULL, **gen = NULL, **cand = NULL, *items[32]; int *trunc = NULL; int64_t *idx = NULL;
    ft_synth_stats dummy;
    if (!st) st = &dummy;
    if ((r = ft__synth_open(&S, seed_path, out_path, o, st)) != FT_OK) { ft__synth_free(&S); return r; }
    b = S.o.batch;
    user = FT__CAST(char **, FT_MALLOC(sizeof(char *) * (size_t)b));
    pre = FT__CAST(char **, FT_MALLOC(sizeof(char *) * (size_t)b));
    gen = FT__CAST(char **, FT_MALLOC(sizeof(char *) * (size_t)b));
    trunc = FT__CAST(int *, FT_MALLOC(sizeof(int) * (size_t)b));
    cand = FT__CAST(char **, FT_MALLOC(sizeof(char *) * (size_t)(b * 32)));
    if (!user || !pre || !gen || !trunc || !cand) { r = ft_set_error(FT_ERR_NOMEM, "synth: out of memory"); goto done; }
    for (i = 0; i < b; i++) { pre[i] = NULL; user[i] = (char *)ft__synth_list_task; }
    while (S.have < S.o.n && r == FT_OK) {
        int64_t nc = 0, need = S.o.n - S.have, nb = FT__MIN(b, need), s, k;
        if (st->generated >= S.o.max_generated || st->calls >= S.o.max_generated) { st->stopped = 1; break; }
        for (s = 0; s < nb; s++) {                               /* few-shot lists */
            int64_t n_gen = S.n_pool - S.n_seed, kg = FT__MIN((int64_t)S.o.few_shot_generated, n_gen);
            int64_t ks = FT__MIN((int64_t)S.o.few_shot - kg, S.n_seed), kk = ks + kg, len = 16, j;
            char *p;
            FT_FREE(idx);
            idx = FT__CAST(int64_t *, FT_MALLOC(sizeof(int64_t) * (size_t)(kk + 1)));
            if (!idx) { r = ft_set_error(FT_ERR_NOMEM, "synth: out of memory"); goto done; }
            for (j = 0; j < ks; j++) {                             /* distinct seeds */
                int64_t c, t;
                do { c = (int64_t)(ft_rng_u64(&S.rng) % (uint64_t)S.n_seed); for (t = 0; t < j && idx[t] != c; t++) {} } while (t < j);
                idx[j] = c;
            }
            for (j = 0; j < kg; j++) {                             /* distinct earlier outputs */
                int64_t c, t;
                do { c = S.n_seed + (int64_t)(ft_rng_u64(&S.rng) % (uint64_t)n_gen); for (t = ks; t < ks + j && idx[t] != c; t++) {} } while (t < ks + j);
                idx[ks + j] = c;
            }
            for (j = 0; j < kk; j++) len += (int64_t)strlen(S.pool[idx[j]]) + 16;
            FT_FREE(pre[s]);
            if (!(p = pre[s] = FT__CAST(char *, FT_MALLOC((size_t)len)))) { r = ft_set_error(FT_ERR_NOMEM, "synth: out of memory"); goto done; }
            p[0] = 0;
            for (j = 0; j < kk; j++) {
                const char *t = S.pool[idx[j]]; char *q = p + strlen(p); int64_t c;
                q += sprintf(q, "%d. ", (int)(j + 1));
                for (c = 0; t[c]; c++) *q++ = t[c] == '\n' ? ' ' : t[c];   /* one line per item */
                *q++ = '\n'; *q = 0;
            }
            sprintf(p + strlen(p), "%d.", (int)(kk + 1));
        }
        if ((r = ft_synth_generate(ctx, m, nb, (const char *const *)user, (const char *const *)pre, NULL, S.o.max_new,
                                   &S.o.sample, &S.rng, gen, trunc)) != FT_OK) break;
        st->calls++;
        for (s = 0; s < nb; s++) {
            int kk = (int)FT__MIN((int64_t)S.o.few_shot, S.n_pool), ni = ft_synth_parse_list(gen[s], kk + 1, trunc[s], items, 32);
            for (k = 0; k < ni; k++) {
                ft_synth_reason why = FT_SYNTH_KEPT;
                if (nc < need && r == FT_OK) {
                    st->generated++;
                    why = ft_synth_check_instruction(items[k], NULL, (const char *const *)S.pool, S.n_pool, &S.o, NULL);
                    if (why != FT_SYNTH_KEPT) st->rejected[why]++;
                    else if ((r = ft__synth_pool_add(&S, items[k])) == FT_OK) { cand[nc++] = items[k]; items[k] = NULL; }
                }
                FT_FREE(items[k]);
            }
        }
        ft_synth_texts_free(gen, nb);
        if (r == FT_OK && nc > 0) r = ft__synth_answer(&S, ctx, m, cand, NULL, nc);
        ft_synth_texts_free(cand, nc);
        ft__synth_progress(&S);
    }
done:
    if (pre) ft_synth_texts_free(pre, b);
    FT_FREE(user); FT_FREE(pre); FT_FREE(gen); FT_FREE(trunc); FT_FREE(cand); FT_FREE(idx);
    st->seconds = ft_time_seconds() - S.t0;
    ft__synth_free(&S);
    return r;
}

/* the evolution prompts: in-depth operations 0..4, in-breadth 5 (this file's wording) */
static const char *ft__evol_ops[6] = {
    "Make the task a little harder by adding one more requirement or limit that the answer must respect.",
    "Make the task ask about its topic in more depth: a question that goes further into the subject.",
    "Make the task more specific: replace general words in it with concrete, particular ones.",
    "Make the task need several explicit steps of thinking to answer, not just one simple step.",
    "Add a small concrete input to the task (a short sentence, a list of numbers or a few words) that the answer must work on.",
    NULL};
static char *ft__evol_prompt(int op, const char *inst) {
    static const char *depth_head = "Rewrite the task below into a new version that is more difficult but still clear and answerable by a person. ";
    static const char *depth_tail = " Keep it to one or two sentences. Reply with the rewritten task only.\n\nTask: ";
    static const char *breadth = "Take the task below as inspiration and write one brand-new task from the same field, on a rarer topic, "
                                 "about as long and as difficult. Reply with the new task only.\n\nTask: ";
    size_t n = strlen(depth_head) + strlen(depth_tail) + strlen(breadth) + 256 + strlen(inst);
    char *p = FT__CAST(char *, FT_MALLOC(n));
    if (!p) return NULL;
    if (op == 5) snprintf(p, n, "%s%s", breadth, inst);
    else snprintf(p, n, "%s%s%s%s", depth_head, ft__evol_ops[op], depth_tail, inst);
    return p;
}

FT_API ft_result ft_synth_evol_instruct(ft_ctx *ctx, ft_model *m, const char *seed_path, const char *out_path,
                                        const ft_synth_opts *o, ft_synth_stats *st) {
    ft__synth S; ft_result r; int64_t i, b;
    char **user = NULL, **gen = NULL, **cand = NULL, **orig = NULL; int *ops = NULL, *cops = NULL; const char **pre = NULL;
    ft_synth_stats dummy;
    if (!st) st = &dummy;
    if ((r = ft__synth_open(&S, seed_path, out_path, o, st)) != FT_OK) { ft__synth_free(&S); return r; }
    b = S.o.batch;
    user = FT__CAST(char **, FT_MALLOC(sizeof(char *) * (size_t)b));
    gen = FT__CAST(char **, FT_MALLOC(sizeof(char *) * (size_t)b));
    cand = FT__CAST(char **, FT_MALLOC(sizeof(char *) * (size_t)b));
    orig = FT__CAST(char **, FT_MALLOC(sizeof(char *) * (size_t)b));
    ops = FT__CAST(int *, FT_MALLOC(sizeof(int) * (size_t)b));
    cops = FT__CAST(int *, FT_MALLOC(sizeof(int) * (size_t)b));
    pre = FT__CAST(const char **, FT_MALLOC(sizeof(char *) * (size_t)b));
    if (!user || !gen || !cand || !orig || !ops || !cops || !pre) { r = ft_set_error(FT_ERR_NOMEM, "synth: out of memory"); goto done; }
    for (i = 0; i < b; i++) user[i] = orig[i] = NULL;
    while (S.have < S.o.n && r == FT_OK) {
        int64_t nc = 0, need = S.o.n - S.have, nb = FT__MIN(b, need), s;
        if (st->generated >= S.o.max_generated || st->calls >= S.o.max_generated) { st->stopped = 1; break; }
        for (s = 0; s < nb; s++) {                               /* an instruction and an operation each */
            int64_t src = (int64_t)(ft_rng_u64(&S.rng) % (uint64_t)S.n_pool);
            const char *in = src < S.n_seed ? S.seed_input[src] : "";
            size_t L = strlen(S.pool[src]) + strlen(in) + 2;
            ops[s] = (int)(ft_rng_u64(&S.rng) % 6);
            FT_FREE(orig[s]);
            if (!(orig[s] = FT__CAST(char *, FT_MALLOC(L)))) { r = ft_set_error(FT_ERR_NOMEM, "synth: out of memory"); goto done; }
            if (in[0]) snprintf(orig[s], L, "%s\n%s", S.pool[src], in);
            else snprintf(orig[s], L, "%s", S.pool[src]);
            FT_FREE(user[s]);
            if (!(user[s] = ft__evol_prompt(ops[s], orig[s]))) { r = ft_set_error(FT_ERR_NOMEM, "synth: out of memory"); goto done; }
        }
        for (s = 0; s < nb; s++) pre[s] = ops[s] == 5 ? "New task:" : "Rewritten task:";   /* the reply's start */
        if ((r = ft_synth_generate(ctx, m, nb, (const char *const *)user, pre, NULL, S.o.max_new,
                                   &S.o.sample, &S.rng, gen, NULL)) != FT_OK) break;
        st->calls++;
        for (s = 0; s < nb && r == FT_OK; s++) {
            const char *g = gen[s], *e = strstr(g, "\n\n");           /* the first paragraph */
            char *ev = ft__synth_clean(g, e ? (size_t)(e - g) : strlen(g));
            ft_synth_reason why;
            if (!ev) { r = ft_set_error(FT_ERR_NOMEM, "synth: out of memory"); break; }
            st->generated++;
            why = ft_synth_check_instruction(ev, orig[s], (const char *const *)S.pool, S.n_pool, &S.o, NULL);
            if (why != FT_SYNTH_KEPT) { st->rejected[why]++; FT_FREE(ev); continue; }
            if ((r = ft__synth_pool_add(&S, ev)) != FT_OK) { FT_FREE(ev); break; }
            cand[nc] = ev; cops[nc] = ops[s]; nc++;
        }
        ft_synth_texts_free(gen, nb);
        if (r == FT_OK && nc > 0) r = ft__synth_answer(&S, ctx, m, cand, cops, nc);
        ft_synth_texts_free(cand, nc);
        ft__synth_progress(&S);
    }
done:
    if (user) ft_synth_texts_free(user, b);
    if (orig) ft_synth_texts_free(orig, b);
    FT_FREE(user); FT_FREE(gen); FT_FREE(cand); FT_FREE(orig); FT_FREE(ops); FT_FREE(cops); FT_FREE(pre);
    st->seconds = ft_time_seconds() - S.t0;
    ft__synth_free(&S);
    return r;
}

#endif /* FT_NO_SYNTH */

/* ============================================================================================
   [merge] merging models and adapters, with mergekit's definitions (mergekit 0.1.5, PyPI:
   merge_methods/linear.py, merge_methods/generalized_task_arithmetic.py, sparsify.py)
   linear:  sum_i w_i x_i (fused multiply-adds, as torch's addcmul_ on CPU), / sum_i w_i with
            normalize                                                          (linear.py 20-38)
   the others, on task vectors d_i = x_i - base           (generalized_task_arithmetic.py 91-145):
     1. sparsify each d_i. TIES keeps the k = max(1, int(density n)) entries of largest |d|
        (sparsify.py 56-78); among equal magnitudes at the cut the lowest indices survive, as
        with a stable argsort (mergekit's torch.argsort is not stable, so there the choice is
        unspecified). DARE keeps each entry with probability density (118-134). density >= 1
        keeps everything; TIES with density <= 0 keeps nothing. Rescale (23-53): L1 multiplies
        the kept entries by |d|_1 / |kept|_1 (not when either is < 1e-7); DENSITY divides by
        the density (mergekit before 0.1.0, the DARE paper).
     2. d_i *= w_i.
     3. TIES, DARE-TIES: a sign per entry, + when sum_i d_i >= 0 (SUM) or sum_i sign(d_i) >= 0
        (COUNT) (get_mask, 148-172); m_i = [sign(d_i) == that sign] (a zero never agrees);
        mixed = sum_i m_i d_i, divisor = sum_i m_i w_i (0 -> 1).
        task, DARE-linear: mixed = sum_i d_i, divisor = sum_i w_i (|.| < 1e-8 -> 1).
     4. normalize: mixed /= divisor; mixed *= lambda; out = base + mixed.
   All float32 in mergekit's order of operations, so results agree to rounding
   (tests/test_merge.c holds tools/ref/merge_fixtures.py's cases to 1e-6).
   ft_merge_models streams: the header is written first (ft_gguf_write's layout), then each
   tensor is read, merged, encoded and written before the next, so memory is a few copies of
   the largest tensor whatever the model's size.
   ============================================================================================ */
#ifndef FT_NO_MERGE
FT_API const char *ft_merge_method_name(ft_merge_method m) {
    const char *n = ft_enum_name(FT_ENUM_MERGE_METHOD, (int)m);
    return n ? n : "?";
}
FT_API int ft_merge_method_parse(const char *s, ft_merge_method *m) {
    int v;
    if (strcmp(s, "task_arithmetic") == 0) s = "task";          /* mergekit's name */
    if (!ft_enum_parse(FT_ENUM_MERGE_METHOD, s, &v)) return 0;
    *m = (ft_merge_method)v;
    return 1;
}

/* the options with the method's defaults filled in */
typedef struct ft__merge_cfg {
    ft_merge_method method; ft_merge_rescale rescale; ft_merge_sign sign;
    int normalize, consensus, random, sparse; float lambda;
} ft__merge_cfg;
FT_API ft_merge_opts ft_merge_opts_default(ft_merge_method method) {
    ft_merge_opts o;
    int random = method == FT_MERGE_DARE_LINEAR || method == FT_MERGE_DARE_TIES;
    memset(&o, 0, sizeof o);
    o.method = method;
    o.normalize = method == FT_MERGE_LINEAR || method == FT_MERGE_TIES ? 1 : -1;
    o.rescale = random ? FT_MERGE_RESCALE_L1 : FT_MERGE_RESCALE_NONE;
    o.lambda = 1.0f;
    o.type = FT_TYPE_F32;
    return o;
}

static ft_result ft__merge_cfg_init(ft__merge_cfg *c, const ft_merge_opts *o) {
    memset(c, 0, sizeof *c);
    if ((int)o->method < 0 || (int)o->method > (int)FT_MERGE_DARE_TIES) return ft_set_error(FT_ERR_INVALID, "merge: unknown method %d", (int)o->method);
    if ((int)o->rescale < 0 || (int)o->rescale > (int)FT_MERGE_RESCALE_DENSITY) return ft_set_error(FT_ERR_INVALID, "merge: unknown rescale %d", (int)o->rescale);
    if ((int)o->sign < 0 || (int)o->sign > (int)FT_MERGE_SIGN_COUNT) return ft_set_error(FT_ERR_INVALID, "merge: unknown sign election %d", (int)o->sign);
    c->method = o->method; c->sign = o->sign;
    c->consensus = o->method == FT_MERGE_TIES || o->method == FT_MERGE_DARE_TIES;
    c->random = o->method == FT_MERGE_DARE_LINEAR || o->method == FT_MERGE_DARE_TIES;
    c->sparse = o->method == FT_MERGE_TIES || c->random;
    {
        ft_merge_opts d = ft_merge_opts_default(o->method);      /* a zero field: the method's default */
        c->normalize = (o->normalize ? o->normalize : d.normalize) > 0;
        c->rescale = o->rescale ? o->rescale : d.rescale;
        c->lambda = o->lambda != 0 ? o->lambda : d.lambda;
    }
    return FT_OK;
}

/* |v| as a sort key: NaN ranks above everything, as in torch.sort */
static float ft__merge_mag(float v) { float a = fabsf(v); return a == a ? a : INFINITY; }

/* the k-th largest of a[0..n-1], 1 <= k <= n; reorders a (Hoare's FIND, median-of-three pivot) */
static float ft__merge_kth_largest(float *a, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1, t = n - k;
    while (lo < hi) {
        int64_t i = lo, j = hi;
        float p = a[lo], q = a[lo + (hi - lo) / 2], r = a[hi];
        float x = p < q ? (q < r ? q : p < r ? r : p) : (p < r ? p : q < r ? r : q);
        do {
            while (a[i] < x) i++;
            while (x < a[j]) j--;
            if (i <= j) { float s = a[i]; a[i] = a[j]; a[j] = s; i++; j--; }
        } while (i <= j);
        if (j < t) lo = i;
        if (t < i) hi = j;
    }
    return a[t];
}

/* TIES's trim or DARE's drop of one task vector d (n), in place, then the rescale.
   sel: n floats of scratch (TIES). */
static void ft__merge_sparsify(float *d, int64_t n, double density, const ft__merge_cfg *c,
                               const unsigned char *keep, ft_rng *rng, float *sel) {
    int64_t i; double before = 0, after = 0;
    if (density >= 1 || n == 0) return;
    if (c->rescale == FT_MERGE_RESCALE_L1) for (i = 0; i < n; i++) before += fabs((double)d[i]);
    if (!c->random) {
        int64_t k, above = 0, ties; float thr;
        if (density <= 0) { memset(d, 0, (size_t)n * sizeof *d); return; }
        k = (int64_t)(density * (double)n);
        if (k < 1) k = 1;
        for (i = 0; i < n; i++) sel[i] = ft__merge_mag(d[i]);
        thr = ft__merge_kth_largest(sel, n, k);
        for (i = 0; i < n; i++) above += ft__merge_mag(d[i]) > thr;
        ties = k - above;                               /* equal to the cut: the first ones stay */
        for (i = 0; i < n; i++) {
            float m = ft__merge_mag(d[i]);
            if (m > thr) continue;
            if (m == thr && ties > 0) { ties--; continue; }
            d[i] = 0;
        }
    } else {
        for (i = 0; i < n; i++) {
            int on = keep ? keep[i] != 0 : (double)ft_rng_uniform(rng) < density;
            if (!on) d[i] = 0;
        }
    }
    if (c->rescale == FT_MERGE_RESCALE_L1) {
        float fb, fa, f;
        for (i = 0; i < n; i++) after += fabs((double)d[i]);
        fb = (float)before; fa = (float)after;
        if (fb < 1e-7f || fa < 1e-7f) return;
        f = fb / fa;
        for (i = 0; i < n; i++) d[i] *= f;
    } else if (c->rescale == FT_MERGE_RESCALE_DENSITY) {
        float fd = (float)density;
        if (density <= 0) { memset(d, 0, (size_t)n * sizeof *d); return; }
        for (i = 0; i < n; i++) d[i] /= fd;
    }
}

static int ft__merge_sgn(float v) { return v > 0 ? 1 : v < 0 ? -1 : 0; }

FT_API ft_result ft_merge_deltas(float *out, float *const *d, int k, int64_t n, const double *weights,
                                 const double *densities, const unsigned char *const *keep, ft_rng *rng,
                                 const ft_merge_opts *o) {
    ft__merge_cfg c; ft_result r; ft_rng local; float *sel = NULL, wsum = 0; int i; int64_t j;
    if ((r = ft__merge_cfg_init(&c, o)) != FT_OK) return r;
    if (k < 1 || n < 0 || !weights) return ft_set_error(FT_ERR_INVALID, "merge: %d inputs, %lld elements", k, (long long)n);
    if (c.sparse) {
        for (i = 0; i < k && !sel; i++) {
            double dn = densities ? densities[i] : 1.0;
            if (!c.random && dn > 0 && dn < 1 && n > 0) {
                if (!(sel = FT__CAST(float *, FT_MALLOC((size_t)n * sizeof(float))))) return ft_set_error(FT_ERR_NOMEM, "merge: out of memory (%lld floats)", (long long)n);
            }
        }
        if (c.random && !rng) { ft_rng_seed(&local, o->seed); rng = &local; }
        for (i = 0; i < k; i++)
            ft__merge_sparsify(d[i], n, densities ? densities[i] : 1.0, &c, keep ? keep[i] : NULL, rng, sel);
        FT_FREE(sel);
    }
    for (i = 0; i < k; i++) {
        float w = (float)weights[i];
        for (j = 0; j < n; j++) d[i][j] *= w;
        wsum += w;
    }
    if (c.consensus) {
        for (j = 0; j < n; j++) {
            float s = 0, mix = 0, div = 0; int elected;
            for (i = 0; i < k; i++) s += c.sign == FT_MERGE_SIGN_SUM ? d[i][j] : (float)ft__merge_sgn(d[i][j]);
            elected = s >= 0 ? 1 : -1;
            for (i = 0; i < k; i++)
                if (ft__merge_sgn(d[i][j]) == elected) { mix += d[i][j]; div += (float)weights[i]; }
            if (div == 0) div = 1;
            if (c.normalize) mix /= div;
            if (c.lambda != 1) mix *= c.lambda;
            out[j] = mix;
        }
    } else {
        if (fabsf(wsum) < 1e-8f) wsum = 1;
        for (j = 0; j < n; j++) {
            float mix = 0;
            for (i = 0; i < k; i++) mix += d[i][j];
            if (c.normalize) mix /= wsum;
            if (c.lambda != 1 && c.method != FT_MERGE_LINEAR) mix *= c.lambda;
            out[j] = mix;
        }
    }
    return FT_OK;
}

FT_API ft_result ft_merge_tensor(float *out, const float *base, const float *const *x, int k, int64_t n,
                                 const double *weights, const double *densities,
                                 const unsigned char *const *keep, ft_rng *rng, const ft_merge_opts *o) {
    ft__merge_cfg c; ft_result r; float *buf, **d; void *mem; int i; int64_t j;
    if ((r = ft__merge_cfg_init(&c, o)) != FT_OK) return r;
    if (k < 1 || n < 0 || !weights) return ft_set_error(FT_ERR_INVALID, "merge: %d inputs, %lld elements", k, (long long)n);
    if (c.method == FT_MERGE_LINEAR) {                  /* mergekit's linear_merge: no base */
        float wsum = 0;
        for (i = 0; i < k; i++) wsum += (float)weights[i];
        if (c.normalize && wsum == 0) return ft_set_error(FT_ERR_INVALID, "merge: linear with normalize, but the weights sum to 0");
        for (j = 0; j < n; j++) {
            float acc = 0;
            for (i = 0; i < k; i++) acc = fmaf(x[i][j], (float)weights[i], acc);   /* torch's addcmul_: one rounding */
            out[j] = c.normalize ? acc / wsum : acc;
        }
        return FT_OK;
    }
    if (!base) return ft_set_error(FT_ERR_INVALID, "merge: %s needs a base tensor", ft_merge_method_name(c.method));
    mem = FT_MALLOC((size_t)k * sizeof(float *) + ((size_t)k + 1) * (size_t)n * sizeof(float));
    if (!mem) return ft_set_error(FT_ERR_NOMEM, "merge: out of memory (%d x %lld floats)", k + 1, (long long)n);
    d = FT__CAST(float **, mem);
    buf = FT__CAST(float *, FT__CAST(void *, d + k));
    for (i = 0; i < k; i++) {
        d[i] = buf + (size_t)i * (size_t)n;
        for (j = 0; j < n; j++) d[i][j] = x[i][j] - base[j];
    }
    r = ft_merge_deltas(buf + (size_t)k * (size_t)n, d, k, n, weights, densities, keep, rng, o);
    if (r == FT_OK) for (j = 0; j < n; j++) out[j] = base[j] + buf[(size_t)k * (size_t)n + (size_t)j];
    FT_FREE(mem);
    return r;
}

/* ---- models and adapters, one tensor at a time ---------------------------------------------------- */
enum { FT__MSRC_MODEL = 0,          /* a model GGUF with the base's tensors                          */
       FT__MSRC_LORA_CPP,           /* llama.cpp LoRA: "<weight>.lora_a" ne [in, r], ".lora_b" [r, out] */
       FT__MSRC_LORA_FT,            /* finetune.h's LoRA: "layers.L.<site>.lora_A" (r, in), "lora_B"   */
       FT__MSRC_FULL };             /* finetune.h's full fine-tuning: some of the base's tensors, f32  */
typedef struct ft__merge_src {
    ft_gguf *g; const char *path; int kind;
    double alpha;                   /* LORA_CPP: adapter.lora.alpha (0: scale 1, as llama.cpp)       */
    float scale;                    /* LORA_FT: alpha / r or alpha / sqrt(r)                          */
    int64_t n_need, n_used;         /* tensors that must find a place in the base; those that did    */
} ft__merge_src;

static void ft__merge_log(const ft_merge_opts *o, int level, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static void ft__merge_log(const ft_merge_opts *o, int level, const char *fmt, ...) {
    char msg[1024]; va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (o->log) o->log(o->log_user, level, msg);
    else if (level > 0) fprintf(stderr, "finetune: %s\n", msg);
}

static uint64_t ft__merge_fnv1a(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull; size_t i;
    for (i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 0x100000001b3ull; }
    return h;
}
static int ft__merge_ends(ft_gguf_str s, const char *suffix) {
    size_t n = strlen(suffix);
    return s.n > n && memcmp(s.s + s.n - n, suffix, n) == 0;
}
static int ft__merge_str_is(ft_gguf_str s, const char *t) { return s.n == strlen(t) && memcmp(s.s, t, s.n) == 0; }

static ft_result ft__merge_open_src(ft__merge_src *s, const char *path, const ft_gguf *base, const ft_merge_opts *o) {
    ft_gguf_str st, a0, a1; ft_result r; int64_t i, v; double a;
    memset(s, 0, sizeof *s);
    s->path = path;
    if ((r = ft_gguf_open(&s->g, path)) != FT_OK) return r;
    if (!ft_gguf_get_str(s->g, "adapter.type", &st)) {
        s->kind = FT__MSRC_MODEL;
        if (ft_gguf_get_str(base, "general.architecture", &a0) && ft_gguf_get_str(s->g, "general.architecture", &a1) &&
            (a0.n != a1.n || memcmp(a0.s, a1.s, a0.n) != 0))
            return ft_set_error(FT_ERR_FORMAT, "%s is a %.*s model and the base %s a %.*s model", path, (int)FT__MIN(a1.n, 32), a1.s,
                                ft_gguf_path(base), (int)FT__MIN(a0.n, 32), a0.s);
        s->n_need = ft_gguf_n_tensors(s->g);
        return FT_OK;
    }
    if (ft__merge_str_is(st, "lora")) {
        s->kind = FT__MSRC_LORA_CPP;
        if (ft_gguf_get_float(s->g, "adapter.lora.alpha", &a)) s->alpha = a;
        for (i = 0; i < ft_gguf_n_tensors(s->g); i++) {
            const ft_gguf_tensor *t = ft_gguf_tensor_at(s->g, i);
            if (ft__merge_ends(t->name, ".lora_a") || ft__merge_ends(t->name, ".lora_b")) s->n_need++;
            else ft__merge_log(o, 1, "%s: tensor %.*s is not a LoRA matrix; ignored", path, (int)FT__MIN(t->name.n, 200), t->name.s);
        }
        return FT_OK;
    }
    if (!ft__merge_str_is(st, "finetune") || !ft_gguf_get_str(s->g, "finetune.peft.method", &st))
        return ft_set_error(FT_ERR_FORMAT, "%s: adapter.type is neither lora nor finetune", path);
    if (ft__merge_str_is(st, "full")) { s->kind = FT__MSRC_FULL; s->n_need = ft_gguf_n_tensors(s->g); }
    else if (ft__merge_str_is(st, "lora")) {
        int64_t rank = 8; double alpha = 0; int rs = 0;
        if (ft_gguf_get_int(s->g, "finetune.peft.lora.dora", &v) && v)
            return ft_set_error(FT_ERR_UNSUPPORTED, "%s: a DoRA adapter is not a sum W + s B A; merge it into its base (ft_peft_merge) first", path);
        if (ft_gguf_get_int(s->g, "finetune.peft.lora.r", &v) && v > 0) rank = v;
        if (ft_gguf_get_float(s->g, "finetune.peft.lora.alpha", &a)) alpha = a;
        if (ft_gguf_get_int(s->g, "finetune.peft.lora.rslora", &v)) rs = v != 0;
        if (alpha <= 0) alpha = (double)rank;
        s->kind = FT__MSRC_LORA_FT;
        s->scale = rs ? (float)alpha / sqrtf((float)rank) : (float)alpha / (float)rank;
        for (i = 0; i < ft_gguf_n_tensors(s->g); i++) {
            const ft_gguf_tensor *t = ft_gguf_tensor_at(s->g, i);
            if (ft__merge_ends(t->name, ".lora_A") || ft__merge_ends(t->name, ".lora_B")) s->n_need++;
            else ft__merge_log(o, 1, "%s: tensor %.*s has no place in a model; ignored", path, (int)FT__MIN(t->name.n, 200), t->name.s);
        }
    } else return ft_set_error(FT_ERR_UNSUPPORTED, "%s: a %.*s adapter changes the forward pass, not the weights; only LoRA and full fine-tuning merge into a model",
                               path, (int)FT__MIN(st.n, 32), st.s);
    return FT_OK;
}

/* the LoRA matrices an adapter holds for the base tensor `name` (NULL, NULL: none) */
static void ft__merge_lora_pair(const ft__merge_src *s, const char *name, const ft_gguf_tensor **A, const ft_gguf_tensor **B) {
    char nm[320]; int l, w, len = 0; char site[64];
    *A = *B = NULL;
    if (s->kind == FT__MSRC_LORA_CPP) {
        snprintf(nm, sizeof nm, "%s.lora_a", name); *A = ft_gguf_find_tensor(s->g, nm);
        snprintf(nm, sizeof nm, "%s.lora_b", name); *B = ft_gguf_find_tensor(s->g, nm);
    } else if (s->kind == FT__MSRC_LORA_FT) {
        if (sscanf(name, "blk.%d.%63[^.].weight%n", &l, site, &len) != 2 || len == 0 || name[len] != 0) return;
        for (w = 0; w < FT_SITE_COUNT && strcmp(site, ft__gguf_site_name(w)) != 0; w++) {}
        if (w == FT_SITE_COUNT) return;
        snprintf(nm, sizeof nm, "layers.%d.%s.lora_A", l, ft_site_name(w)); *A = ft_gguf_find_tensor(s->g, nm);
        snprintf(nm, sizeof nm, "layers.%d.%s.lora_B", l, ft_site_name(w)); *B = ft_gguf_find_tensor(s->g, nm);
    }
}
/* the name of the base tensor an adapter's tensor t would modify, or "" */
static void ft__merge_lora_target(const ft__merge_src *s, ft_gguf_str t, char *out, size_t cap) {
    char nm[320]; int l, w, len = 0; char site[64];
    out[0] = 0;
    if (t.n >= sizeof nm) return;
    memcpy(nm, t.s, t.n); nm[t.n] = 0;
    if (s->kind == FT__MSRC_LORA_CPP && t.n > 7) { nm[t.n - 7] = 0; snprintf(out, cap, "%s", nm); }
    else if (s->kind == FT__MSRC_LORA_FT && sscanf(nm, "layers.%d.%63[^.].lora_%*c%n", &l, site, &len) == 2 && len > 0 && nm[len] == 0) {
        for (w = 0; w < FT_SITE_COUNT && strcmp(site, ft_site_name(w)) != 0; w++) {}
        if (w < FT_SITE_COUNT) snprintf(out, cap, "blk.%d.%s.weight", l, ft__gguf_site_name(w));
        else snprintf(out, cap, "(unknown site %s)", site);
    }
}

static void ft__merge_shape_str(const ft_gguf_tensor *t, char *buf, size_t cap) {
    int d; size_t at = 0;
    at += (size_t)snprintf(buf, cap, "[");
    for (d = 0; d < t->n_dims && at < cap; d++) at += (size_t)snprintf(buf + at, cap - at, d ? ", %lld" : "%lld", (long long)t->ne[d]);
    if (at < cap) snprintf(buf + at, cap - at, "] %s", ft_type_name(t->type));
}
static int ft__merge_same_shape(const ft_gguf_tensor *a, const ft_gguf_tensor *b) {
    int d;
    if (a->n_dims != b->n_dims) return 0;
    for (d = 0; d < a->n_dims; d++) if (a->ne[d] != b->ne[d]) return 0;
    return 1;
}
static int ft__merge_decodable(ft_type t) { return ft__type(t) && ft__type(t)->to_f32 != NULL; }

/* x (out, in) += s B A with A (r, in), B (out, r) given as GGUF tensors: ft_peft_merge's order */
static ft_result ft__merge_add_lora(float *x, const ft_gguf_tensor *A, const ft_gguf_tensor *B, float s) {
    int64_t in = A->ne[0], r = A->ne[1], out = B->ne[1], o, k;
    float *a = FT__CAST(float *, FT_MALLOC((size_t)(r * in + out * r) * sizeof(float))), *b;
    if (!a) return ft_set_error(FT_ERR_NOMEM, "merge: out of memory (LoRA %lld x %lld)", (long long)out, (long long)in);
    b = a + r * in;
    ft__type(A->type)->to_f32(A->data, a, r * in);
    ft__type(B->type)->to_f32(B->data, b, out * r);
    for (o = 0; o < out; o++)
        for (k = 0; k < r; k++) ft__vec_axpy(in, s * b[o * r + k], a + k * in, x + o * in);
    FT_FREE(a);
    return FT_OK;
}

static void ft__merge_abort(ft__afile *a) {
    close(a->fd);
    remove(a->tmp);
    FT_FREE(a->tmp); a->tmp = NULL;
}

/* the state of one ft_merge_models call, shared by its phases */
typedef struct ft__merge_job {
    const char *base_path; const ft_merge_input *in; int n;
    ft_merge_opts o; ft__merge_cfg c;
    int linear_models;              /* linear over whole models: sum w x, no deltas               */
    ft_gguf *base; ft__merge_src *src; ft_gguf_writer *w;
    int64_t nt, maxn; size_t maxbytes;
    unsigned char *copy; ft_type *otype;   /* per base tensor: copied as stored, or merged as otype */
    double *wt, *dn; float wsum;
    float *mem, *bbuf, *obuf, **xp; void *enc;
    int64_t merged, copied; size_t pos;
} ft__merge_job;

static void ft__merge_job_free(ft__merge_job *j) {
    int i;
    if (j->src) for (i = 0; i < j->n; i++) ft_gguf_close(j->src[i].g);
    ft_gguf_close(j->base);
    ft_gguf_writer_free(j->w);
    FT_FREE(j->copy); FT_FREE(j->otype); FT_FREE(j->wt); FT_FREE(j->src); FT_FREE(j->xp); FT_FREE(j->mem); FT_FREE(j->enc);
}

/* the options, the weights and densities, the base and every input opened */
static ft_result ft__merge_inputs(ft__merge_job *j) {
    ft_result r; int i; ft_gguf_str bt; ft_type t = j->o.type;
    if ((r = ft__merge_cfg_init(&j->c, &j->o)) != FT_OK) return r;
    if (j->n < 1) return ft_set_error(FT_ERR_INVALID, "merge: no inputs");
    if (t != FT_TYPE_F32 && t != FT_TYPE_F16 && t != FT_TYPE_BF16 && t != FT_TYPE_Q8_0 && t != FT_TYPE_Q4_0 && t != FT_TYPE_Q4_1)
        return ft_set_error(FT_ERR_UNSUPPORTED, "merge: cannot write %s (f32, f16, bf16, q8_0, q4_0, q4_1)", ft_type_name(t));
    j->linear_models = j->c.method == FT_MERGE_LINEAR && !j->o.lora_deltas;
    j->wt = FT__CAST(double *, FT_MALLOC(2 * (size_t)j->n * sizeof(double)));
    j->src = FT__CAST(ft__merge_src *, FT_MALLOC((size_t)j->n * sizeof *j->src));
    j->xp = FT__CAST(float **, FT_MALLOC((size_t)j->n * sizeof(float *)));
    if (!j->wt || !j->src || !j->xp) return ft_set_error(FT_ERR_NOMEM, "merge: out of memory");
    memset(j->src, 0, (size_t)j->n * sizeof *j->src);
    j->dn = j->wt + j->n;
    for (i = 0; i < j->n; i++) {
        const ft_merge_input *x = &j->in[i];
        if (!x->path) return ft_set_error(FT_ERR_INVALID, "merge: input %d has no path", i + 1);
        if (!(x->weight == x->weight) || fabs(x->weight) > 1e30 || !(x->density >= 0) || x->density > 1e30)
            return ft_set_error(FT_ERR_INVALID, "%s: weight %g / density %g out of range", x->path, x->weight, x->density);
        j->wt[i] = x->weight;
        j->dn[i] = x->density > 0 ? x->density : 1.0;
        j->wsum += (float)x->weight;
    }
    if (j->linear_models && j->c.normalize && j->wsum == 0) return ft_set_error(FT_ERR_INVALID, "merge: linear with normalize, but the weights sum to 0");
    if ((r = ft_gguf_open(&j->base, j->base_path)) != FT_OK) return r;
    if (ft_gguf_get_str(j->base, "adapter.type", &bt)) return ft_set_error(FT_ERR_INVALID, "%s: the base is an adapter, not a model", j->base_path);
    for (i = 0; i < j->n; i++) if ((r = ft__merge_open_src(&j->src[i], j->in[i].path, j->base, &j->o)) != FT_OK) return r;
    j->nt = ft_gguf_n_tensors(j->base);
    j->copy = FT__CAST(unsigned char *, FT_MALLOC((size_t)FT__MAX(j->nt, 1)));
    j->otype = FT__CAST(ft_type *, FT_MALLOC((size_t)FT__MAX(j->nt, 1) * sizeof(ft_type)));
    if (!j->copy || !j->otype) return ft_set_error(FT_ERR_NOMEM, "merge: out of memory");
    return ft_gguf_writer_init(&j->w);
}

/* input i against base tensor bt (named name): the same shape, decodable; *same: its bytes equal */
static ft_result ft__merge_check_src(ft__merge_job *j, ft__merge_src *s, const ft_gguf_tensor *bt, const char *name, int *same, int *ok) {
    char sh0[96], sh1[96];
    const ft_gguf_tensor *xt, *A, *B;
    if (s->kind == FT__MSRC_MODEL || s->kind == FT__MSRC_FULL) {
        if (!(xt = ft_gguf_find_tensor(s->g, name)))
            return s->kind == FT__MSRC_FULL ? FT_OK : ft_set_error(FT_ERR_SHAPE, "tensor %s: in %s but not in %s", name, j->base_path, s->path);
        s->n_used++;
        if (!ft__merge_same_shape(bt, xt)) {
            ft__merge_shape_str(bt, sh0, sizeof sh0); ft__merge_shape_str(xt, sh1, sizeof sh1);
            return ft_set_error(FT_ERR_SHAPE, "tensor %s: %s in %s but %s in %s", name, sh0, j->base_path, sh1, s->path);
        }
        if (xt->type != bt->type || xt->nbytes != bt->nbytes || memcmp(xt->data, bt->data, bt->nbytes) != 0) *same = 0;
        *ok = *ok && ft__merge_decodable(xt->type);
        return FT_OK;
    }
    ft__merge_lora_pair(s, name, &A, &B);
    if (!A && !B) return FT_OK;
    if (!A || !B) return ft_set_error(FT_ERR_FORMAT, "%s: tensor %s has a LoRA %s matrix but no %s", s->path, name, A ? "A" : "B", A ? "B" : "A");
    s->n_used += 2;
    if (bt->n_dims != 2 || A->n_dims != 2 || B->n_dims != 2 || A->ne[0] != bt->ne[0] || B->ne[1] != bt->ne[1] || A->ne[1] != B->ne[0] ||
        !ft__merge_decodable(A->type) || !ft__merge_decodable(B->type)) {
        ft__merge_shape_str(bt, sh0, sizeof sh0); ft__merge_shape_str(A, sh1, sizeof sh1);
        return ft_set_error(FT_ERR_SHAPE, "tensor %s: %s in %s, but its LoRA A is %s and B [%lld, %lld] in %s (need A [in, r], B [r, out])",
                            name, sh0, j->base_path, sh1, (long long)B->ne[0], (long long)B->ne[1], s->path);
    }
    *same = 0;
    return FT_OK;
}

/* pass 1, tensor t of the base: every input checked against it; copied as stored or merged, as
   which type */
static ft_result ft__merge_plan(ft__merge_job *j, int64_t t) {
    const ft_gguf_tensor *bt = ft_gguf_tensor_at(j->base, t); int same = 1, ok, i, d; int64_t numel = 1; ft_result r;
    char name[512];
    if (bt->name.n >= sizeof name) return ft_set_error(FT_ERR_FORMAT, "%s: a tensor name of %llu bytes", j->base_path, (unsigned long long)bt->name.n);
    memcpy(name, bt->name.s, bt->name.n); name[bt->name.n] = 0;
    for (d = 0; d < bt->n_dims; d++) numel *= bt->ne[d];
    ok = ft__merge_decodable(bt->type);
    for (i = 0; i < j->n; i++) if ((r = ft__merge_check_src(j, &j->src[i], bt, name, &same, &ok)) != FT_OK) return r;
    if (same && j->linear_models && !j->c.normalize && j->wsum != 1.0f) same = 0;     /* sum w x != x */
    j->copy[t] = (unsigned char)same;
    j->otype[t] = bt->type;
    if (same) return FT_OK;
    if (!ok) return ft_set_error(FT_ERR_UNSUPPORTED, "tensor %s: %s cannot be merged (it differs between the inputs)", name, ft_type_name(bt->type));
    j->otype[t] = bt->n_dims == 1 ? FT_TYPE_F32 : j->o.type;
    if (bt->ne[0] % ft_type_block(j->otype[t]) != 0) j->otype[t] = FT_TYPE_F16;
    j->maxn = FT__MAX(j->maxn, numel);
    j->maxbytes = FT__MAX(j->maxbytes, ft_type_row_bytes(j->otype[t], bt->ne[0]) * (size_t)(numel / bt->ne[0]));
    return FT_OK;
}

/* every tensor of an input found its place in the base (else: which one did not) */
static ft_result ft__merge_all_used(ft__merge_job *j, const ft__merge_src *s) {
    int64_t k; char target[320];
    if (s->n_used == s->n_need) return FT_OK;
    for (k = 0; k < ft_gguf_n_tensors(s->g); k++) {
        const ft_gguf_tensor *xt = ft_gguf_tensor_at(s->g, k);
        if (s->kind == FT__MSRC_MODEL || s->kind == FT__MSRC_FULL) {
            if (xt->name.n >= sizeof target) continue;
            memcpy(target, xt->name.s, xt->name.n); target[xt->name.n] = 0;
        } else {
            if (!ft__merge_ends(xt->name, s->kind == FT__MSRC_LORA_CPP ? ".lora_a" : ".lora_A") &&
                !ft__merge_ends(xt->name, s->kind == FT__MSRC_LORA_CPP ? ".lora_b" : ".lora_B")) continue;
            ft__merge_lora_target(s, xt->name, target, sizeof target);
        }
        if (!ft_gguf_find_tensor(j->base, target))
            return ft_set_error(FT_ERR_SHAPE, "%s: tensor %.*s has no counterpart %s in the base %s", s->path, (int)FT__MIN(xt->name.n, 200), xt->name.s,
                                target[0] ? target : "(unknown name)", j->base_path);
    }
    return ft_set_error(FT_ERR_FORMAT, "%s: %lld of its tensors match the base %s, %lld expected", s->path, (long long)s->n_used, j->base_path, (long long)s->n_need);
}

/* the header: the base's metadata, what was merged from what, every tensor's type and shape */
static ft_result ft__merge_header(ft__merge_job *j) {
    ft_result r = FT_OK; int64_t t; int i; ft_type ot = j->o.type;
    ft_gguf_str *srcs = FT__CAST(ft_gguf_str *, FT_MALLOC((size_t)j->n * sizeof *srcs));
    char *txt = FT__CAST(char *, FT_MALLOC((size_t)j->n * 320)), name[512];
    for (t = 0; t < ft_gguf_n_kv(j->base) && r == FT_OK; t++) r = ft_gguf_copy_kv(j->w, ft_gguf_kv_at(j->base, t));
    if (r == FT_OK && ft_gguf_find(j->base, "general.file_type"))
        r = ft_gguf_set_int(j->w, "general.file_type", FT_GGUF_UINT32, ot == FT_TYPE_F16 ? 1 : ot == FT_TYPE_Q4_0 ? 2 : ot == FT_TYPE_Q4_1 ? 3 :
                                                                       ot == FT_TYPE_Q8_0 ? 7 : ot == FT_TYPE_BF16 ? 32 : 0);
    if (r == FT_OK) r = ft_gguf_set_str(j->w, "finetune.merge.method", ft_merge_method_name(j->c.method));
    if (r == FT_OK && (!srcs || !txt)) r = ft_set_error(FT_ERR_NOMEM, "merge: out of memory");
    for (i = 0; i < j->n && r == FT_OK; i++) {
        const char *bn = strrchr(j->in[i].path, '/');
        int len = snprintf(txt + (size_t)i * 320, 320, "%s:%g:%g", bn ? bn + 1 : j->in[i].path, j->wt[i], j->dn[i]);
        srcs[i].s = txt + (size_t)i * 320;
        srcs[i].n = (uint64_t)FT__MIN(len, 319);
    }
    if (r == FT_OK) r = ft_gguf_set_str_array(j->w, "finetune.merge.sources", srcs, (uint64_t)j->n);
    FT_FREE(srcs); FT_FREE(txt);
    for (t = 0; t < j->nt && r == FT_OK; t++) {
        const ft_gguf_tensor *bt = ft_gguf_tensor_at(j->base, t);
        memcpy(name, bt->name.s, bt->name.n); name[bt->name.n] = 0;
        r = ft_gguf_add_tensor(j->w, name, j->otype[t], bt->n_dims, bt->ne, j->copy[t] ? bt->data : NULL);
    }
    return r;
}

/* buffers for the largest merged tensor: the base, the n inputs, the result, its encoding */
static ft_result ft__merge_buffers(ft__merge_job *j) {
    int i;
    if (j->maxn == 0) return FT_OK;
    j->mem = FT__CAST(float *, FT_MALLOC(((size_t)j->n + 2) * (size_t)j->maxn * sizeof(float)));
    j->enc = FT_MALLOC(FT__MAX(j->maxbytes, 1));
    if (!j->mem || !j->enc) return ft_set_error(FT_ERR_NOMEM, "merge: out of memory (%d x %lld floats)", j->n + 2, (long long)j->maxn);
    j->bbuf = j->mem;
    j->obuf = j->mem + j->maxn;
    for (i = 0; i < j->n; i++) j->xp[i] = j->mem + (2 + (size_t)i) * (size_t)j->maxn;
    return FT_OK;
}

/* input i's version of the tensor into xp[i]: the model's tensor, or the base with the LoRA delta
   added; as a delta from the base unless linear merges whole models */
static ft_result ft__merge_load(ft__merge_job *j, int i, const char *name, int64_t numel) {
    ft__merge_src *s = &j->src[i]; float *x = j->xp[i]; int64_t k; ft_result r = FT_OK;
    const ft_gguf_tensor *xt, *A, *B;
    if (s->kind == FT__MSRC_MODEL || s->kind == FT__MSRC_FULL) {
        if ((xt = ft_gguf_find_tensor(s->g, name)) != NULL) ft__type(xt->type)->to_f32(xt->data, x, numel);
        else memcpy(x, j->bbuf, (size_t)numel * sizeof(float));
        if (!j->linear_models) for (k = 0; k < numel; k++) x[k] -= j->bbuf[k];
        return FT_OK;
    }
    ft__merge_lora_pair(s, name, &A, &B);
    if (j->o.lora_deltas) memset(x, 0, (size_t)numel * sizeof(float));
    else memcpy(x, j->bbuf, (size_t)numel * sizeof(float));
    if (A) r = ft__merge_add_lora(x, A, B, s->kind == FT__MSRC_LORA_FT ? s->scale : s->alpha != 0 ? (float)s->alpha / (float)A->ne[1] : 1.0f);
    if (!j->o.lora_deltas && !j->linear_models) for (k = 0; k < numel; k++) x[k] -= j->bbuf[k];   /* merged into the base first */
    return r;
}

/* the merged tensor t into obuf */
static ft_result ft__merge_one(ft__merge_job *j, const ft_gguf_tensor *bt, const char *name, int64_t numel) {
    ft_result r = FT_OK; int i; int64_t k; ft_rng rng;
    ft__type(bt->type)->to_f32(bt->data, j->bbuf, numel);
    for (i = 0; i < j->n && r == FT_OK; i++) r = ft__merge_load(j, i, name, numel);
    if (r != FT_OK) return r;
    if (j->linear_models) return ft_merge_tensor(j->obuf, NULL, FT__CAST(const float *const *, j->xp), j->n, numel, j->wt, j->dn, NULL, NULL, &j->o);
    ft_rng_seed(&rng, j->o.seed ^ ft__merge_fnv1a(name, strlen(name)));
    r = ft_merge_deltas(j->obuf, j->xp, j->n, numel, j->wt, j->dn, NULL, &rng, &j->o);
    for (k = 0; k < numel; k++) j->obuf[k] = j->bbuf[k] + j->obuf[k];
    return r;
}

/* obuf encoded as `type` into the file */
static ft_result ft__merge_put(ft__merge_job *j, ft__afile *a, ft_type type, int64_t numel) {
    uint16_t *h = FT__CAST(uint16_t *, j->enc); int64_t k; size_t nb;
    switch (type) {
    case FT_TYPE_F32: ft__afile_write(a, j->obuf, (size_t)numel * sizeof(float)); j->pos += (size_t)numel * sizeof(float); return FT_OK;
    case FT_TYPE_F16: for (k = 0; k < numel; k++) h[k] = ft_fp32_to_fp16(j->obuf[k]); break;
    case FT_TYPE_BF16: for (k = 0; k < numel; k++) h[k] = ft_fp32_to_bf16(j->obuf[k]); break;
    case FT_TYPE_Q8_0: ft__quant_q8_0(j->obuf, j->enc, numel); break;
    case FT_TYPE_Q4_0: ft__quant_q4_0(j->obuf, j->enc, numel); break;
    case FT_TYPE_Q4_1: ft__quant_q4_1(j->obuf, j->enc, numel); break;
    default: return ft_set_error(FT_ERR_UNSUPPORTED, "merge: cannot write %s", ft_type_name(type));
    }
    nb = ft_type_row_bytes(type, numel);
    ft__afile_write(a, j->enc, nb);
    j->pos += nb;
    return FT_OK;
}

/* pass 2: the file, one tensor at a time (ft_gguf_write's layout) */
static ft_result ft__merge_write(ft__merge_job *j, const char *out_path) {
    static const unsigned char zeros[64] = {0};
    ft__afile a; ft_result r; int64_t t; char name[512];
    if ((r = ft__afile_open(&a, out_path)) != FT_OK) return r;
    j->pos += ft__gguf_write_header(&a, j->w);
    for (t = 0; t < j->nt && r == FT_OK; t++) {
        const ft_gguf_tensor *bt = ft_gguf_tensor_at(j->base, t); size_t al = j->w->alignment; int64_t numel = 1; int d;
        if (j->copy[t]) {
            ft__afile_write(&a, bt->data, bt->nbytes);
            j->pos += bt->nbytes;
            j->copied++;
        } else {
            memcpy(name, bt->name.s, bt->name.n); name[bt->name.n] = 0;
            for (d = 0; d < bt->n_dims; d++) numel *= bt->ne[d];
            if ((r = ft__merge_one(j, bt, name, numel)) != FT_OK) { r = ft_set_error(r, "tensor %s: %s", name, ft_last_error()); break; }
            if ((r = ft__merge_put(j, &a, j->otype[t], numel)) != FT_OK) break;
            j->merged++;
            ft__merge_log(&j->o, 0, "merged %s (%s, %s)", name, ft_merge_method_name(j->c.method), ft_type_name(j->otype[t]));
        }
        while (j->pos % al) {
            size_t k = FT__MIN(al - j->pos % al, sizeof zeros);
            ft__afile_write(&a, zeros, k);
            j->pos += k;
        }
    }
    if (r != FT_OK) { ft__merge_abort(&a); return r; }
    return ft__afile_commit(&a);
}

FT_API ft_result ft_merge_models(const char *out_path, const char *base_path, const ft_merge_input *in, int n,
                                 const ft_merge_opts *opts, ft_merge_stats *st) {
    ft__merge_job j; ft_result r; int64_t t; int i;
    memset(&j, 0, sizeof j);
    j.base_path = base_path; j.in = in; j.n = n;
    if (opts) j.o = *opts;
    if (st) memset(st, 0, sizeof *st);
    r = ft__merge_inputs(&j);
    for (t = 0; r == FT_OK && t < j.nt; t++) r = ft__merge_plan(&j, t);              /* pass 1 */
    for (i = 0; r == FT_OK && i < n; i++) r = ft__merge_all_used(&j, &j.src[i]);
    if (r == FT_OK) r = ft__merge_header(&j);
    if (r == FT_OK) r = ft__merge_buffers(&j);
    if (r == FT_OK) r = ft__merge_write(&j, out_path);                               /* pass 2 */
    if (r == FT_OK && st) { st->merged = j.merged; st->copied = j.copied; st->bytes = (uint64_t)j.pos; }
    ft__merge_job_free(&j);
    return r;
}

#endif /* FT_NO_MERGE */

/* ============================================================================================
   [names] every enum's names, in one place (the command line's choices, configs, logs)
   ============================================================================================ */
static const char *const ft__names_sched[] = {"cosine", "linear", "constant"};
static const char *const ft__names_optim[] = {"adamw", "sgd"};
static const char *const ft__names_peft[] = {"lora", "adapter", "prefix", "prompt", "ia3", "full", "loha", "custom"};
static const char *const ft__names_act[] = {"relu", "gelu", "silu", "tanh"};
static const char *const ft__names_place[] = {"houlsby", "pfeiffer"};
static const char *const ft__names_prompt_init[] = {"random", "vocab", "text"};
static const char *const ft__names_agg[] = {"grpo", "bnpo", "dr_grpo", "dapo"};
static const char *const ft__names_adv[] = {"group", "batch", "none"};
static const char *const ft__names_data[] = {"auto", "text", "instruct", "chat", "preference", "kto", "prompt"};
static const char *const ft__names_format[] = {"auto", "llamacpp", "peft", "finetune"};
static const char *const ft__names_merge[] = {"linear", "task", "ties", "dare_linear", "dare_ties"};
static const char *const ft__names_sign[] = {"sum", "count"};
static const char *const ft__names_rescale[] = {"default", "none", "l1", "density"};
static const char *const ft__names_synth[] = {"self-instruct", "evol-instruct"};
typedef struct ft__enum_names { const char *const *names; int n; } ft__enum_names;
#define FT__NAMES(a) {a, (int)(sizeof a / sizeof a[0])}
static const ft__enum_names ft__enums[FT_ENUM_COUNT] = {
    {NULL, FT_TYPE_NF4 + 1}, {NULL, FT_OBJ_COUNT}, FT__NAMES(ft__names_peft), FT__NAMES(ft__names_sched),
    FT__NAMES(ft__names_optim), FT__NAMES(ft__names_act), FT__NAMES(ft__names_place), FT__NAMES(ft__names_prompt_init),
    FT__NAMES(ft__names_agg), FT__NAMES(ft__names_adv), FT__NAMES(ft__names_data), FT__NAMES(ft__names_format),
    FT__NAMES(ft__names_merge), FT__NAMES(ft__names_sign), FT__NAMES(ft__names_rescale), FT__NAMES(ft__names_synth),
};
#undef FT__NAMES
/* each table as long as its enum */
typedef char ft__names_fit[(sizeof ft__names_peft / sizeof ft__names_peft[0] == FT_PEFT_COUNT &&
                            sizeof ft__names_sched / sizeof ft__names_sched[0] == FT_SCHED_CONSTANT + 1 &&
                            sizeof ft__names_agg / sizeof ft__names_agg[0] == FT_GRPO_AGG_DAPO + 1 &&
                            sizeof ft__names_data / sizeof ft__names_data[0] == FT_DATA_PROMPT + 1 &&
                            sizeof ft__names_merge / sizeof ft__names_merge[0] == FT_MERGE_DARE_TIES + 1) ? 1 : -1];

FT_API int ft_enum_count(ft_enum e) { return (int)e >= 0 && e < FT_ENUM_COUNT ? ft__enums[e].n : 0; }
FT_API const char *ft_enum_name(ft_enum e, int v) {
    const char *n;
    if ((int)e < 0 || e >= FT_ENUM_COUNT || v < 0 || v >= ft__enums[e].n) return NULL;
    if (e == FT_ENUM_OBJECTIVE) return ft__objectives[v].name;
    if (e != FT_ENUM_TYPE) return ft__enums[e].names[v];
    n = ft_type_name((ft_type)v);                    /* the storage types GGUF has */
    return strcmp(n, "?") ? n : NULL;
}
FT_API int ft_enum_parse(ft_enum e, const char *name, int *value) {
    int v, n = ft_enum_count(e);
    for (v = 0; v < n; v++) {
        const char *k = ft_enum_name(e, v);
        if (k && strcmp(k, name) == 0) { *value = v; return 1; }
    }
    return 0;
}

#endif /* FINETUNE_IMPLEMENTATION */

/*
------------------------------------------------------------------------------
This software is available under 2 licenses -- choose whichever you prefer.
------------------------------------------------------------------------------
ALTERNATIVE A - MIT License
Copyright (c) 2026 the finetune.h authors
Permission is hereby granted, free of charge, to any person obtaining a copy of
this software and associated documentation files (the "Software"), to deal in
the Software without restriction, including without limitation the rights to
use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies
of the Software, and to permit persons to whom the Software is furnished to do
so, subject to the following conditions:
The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.
THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
------------------------------------------------------------------------------
ALTERNATIVE B - Public Domain (www.unlicense.org)
This is free and unencumbered software released into the public domain.
Anyone is free to copy, modify, publish, use, compile, sell, or distribute this
software, either in source code form or as a compiled binary, for any purpose,
commercial or non-commercial, and by any means.
In jurisdictions that recognize copyright laws, the author or authors of this
software dedicate any and all copyright interest in the software to the public
domain. We make this dedication in perpetuity for the benefit of the public at
large and to the detriment of our heirs and successors in perpetuity. We
intend this dedication to be an overt act of relinquishment in perpetuity of
all present and future rights to this software under copyright law.
THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN
ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION
WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
------------------------------------------------------------------------------
*/

#!/usr/bin/env python3
"""llama.cpp's ids for every BPE pre-tokenizer name that finetune.h's tokenizer claims, on one
vocabulary: SmolLM2's (with a few tokens and merges added), its tokenizer.ggml.pre replaced.

    pip install gguf llama-cpp-python        (llama-cpp-python 0.3.36 wrote the committed file)
    python3 tools/ref/pretokenizer_fixtures.py MODEL.gguf [OUT]

MODEL.gguf: SmolLM2-135M-Instruct (tools/fetch-model prints its path; a gpt2-style byte-level BPE
vocabulary of 49,152 tokens and 48,900 merges whose pre-tokenizer is "smollm"). OUT defaults to
tests/fixtures/tokenizer_pre.txt.

We have no Llama 3 or Qwen tokenizer files, but llama.cpp picks the pre-tokenizer (the regex that
splits text into words before the merges) by the GGUF key tokenizer.ggml.pre alone. So for each
name in PRE_NAMES (the 47 names of finetune.h's ft__pre_from_name, and "default") this script
writes a vocabulary-only GGUF into a temporary directory: all of MODEL's key/values, byte for byte,
no tensors, tokenizer.ggml.pre replaced; llama.cpp loads it with vocab_only=True and tokenizes the
corpus. The GGUFs are not kept: tests/test_tokenizer.c builds the same variants itself from
$FT_MODEL with finetune.h's GGUF writer, so the fixture holds only ids (~250 KB).

SmolLM2's vocabulary alone would hide two of the differences: it has no token of two or more
digits (its own pre-tokenizer makes every digit a word), so "1234" gives the same ids whether the
regex cut it 123|4 (llama3), 1|2|3|4 (qwen2) or not at all (gpt2); and no word of the corpus is a
token that its merges cannot build, so ignore_merges changes nothing. On SmolLM2's vocabulary as it
is, llama.cpp gives the same ids for llama-bpe, dbrx and qwen2 on every string here. So the
variants append extra_vocab(): the tokens "00".."999" with merges (none for "900".."999", which only
ignore_merges takes whole) and two merge-less probe words, all at the end (new ids from 49,152,
merges after the 48,900 others); llama.vocab_size follows. The fixture lists them (T, M lines) and
the C test appends the same.

The regex families these names cover (llama.cpp's llm_tokenizer_bpe, unicode.cpp):
    llama3   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+
             "llama-bpe" (Llama 3) and the other LLAMA3 names also set ignore_merges (a word that is
             a token is taken whole); "dbrx" and "smaug-bpe" use the regex without it
    qwen2    the same with \\p{N} one digit at a time (Qwen2, Qwen2.5, Qwen3: "qwen2")
    gpt2     's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)
    smollm   \\p{N} (one digit a word) and then the gpt2 regex (SmolLM2, StarCoder, ...)
    default  four passes: [\\p{P}\\$\\+<=>\\^~\\|]+, the gpt2 regex, \\p{N}+, [0-9][0-9][0-9]
A name llama.cpp refuses (it throws "unknown pre-tokenizer type") gets an R line and no ids: only
"gpt2" (llama.cpp's GPT-2 names are "gpt-2", "mpt", "olmo", ...). LLAMA_CPP_ABORTS: strings that
kill llama.cpp's process, left out.

The corpus: tokenizer_fixtures.py's (SmolLM2's and Gemma 3's strings and invalid UTF-8) and
PRE_CORPUS below, which tells the families apart: contractions in both cases, digit runs longer
than three, space runs before words and at the end, newlines with spaces, punctuation runs,
letters with combining marks, CJK, emoji, mixed scripts; SPECIAL_CORPUS (SmolLM2's control tokens
written in text, around the same hard cases), and N_RANDOM strings from random.Random(SEED) over
a Unicode mix (runs of one script or class, whitespace of every kind, unassigned and private-use
code points, controls).

Line format (one record per line, '#' starts a comment):
    T <hex>                   a token appended to MODEL's vocabulary (type 1, normal), in id order
    M <hex>                   a merge ("left right") appended to MODEL's merges, in rank order
    N <i> <name>              pre-tokenizer name number i (the I/J lines below refer to it)
    R <name> <message>        a name llama.cpp refuses (finetune.h accepts it; no ids)
    S <hex of the UTF-8 bytes, or - for the empty string>
    I <i,j,...> <n> <id> ...  llama.cpp's ids of the string for the names i, j, ...:
                              Llama(vocab_only=True).tokenize(bytes, add_bos=False, special=False);
                              names with the same ids share one line, and the lines of a string
                              cover every N name
    J <i,j,...> <n> <id> ...  the same with special=True (control tokens written in the text are
                              parsed); only for strings that hold a control token's text

Deterministic; ~25 s on 2 cores.
"""
import ctypes
import os
import random
import struct
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tokenizer_fixtures import CORPUS, GEMMA_CORPUS, GEMMA_RAW, RAW  # noqa: E402

# every name of finetune.h's ft__pre_from_name (llama3, smollm, gpt2, qwen2 lists) and "default"
PRE_NAMES = [
    # llama3 regex with ignore_merges, then without
    "llama-bpe", "llama3", "llama-v3", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano",
    "dbrx", "smaug-bpe",
    # qwen2
    "qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan", "solar-open",
    # gpt2
    "gpt2", "gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum",
    "modern-bert", "mpt", "olmo", "jais", "trillion", "granite-docling", "exaone4", "jina-v1-en", "jina-v2-code",
    "roberta-bpe",
    # smollm
    "smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b", "mellum2",
    # the four-pass default
    "default",
]

PRE_CORPUS = [
    # contractions: gpt2's are lower case only, llama3/qwen2's any case
    "'s 't 're 've 'm 'll 'd", "'S 'T 'RE 'VE 'M 'LL 'D", "'Re 'rE 'Ve 'vE 'Ll 'lL 'Sd", "I'M HERE", "WE'LL GO",
    "THEY'RE", "YOU'VE", "HE'D", "IT'S", "Don'T", "isn't", "ISN'T", "'", "''", "'''s", "'x", "' s", "'st",
    "'sss", "'LLama", "'dd", "rock'n'roll", "o'clock", "'\u017f '\u212a '\u0130 '\uff33", "\u2019s \u2019t",
    "l'\u00e9t\u00e9", "'123", "'\n", "''ll", "x'S", "5's", "('s)", " 's", "  'll", "\n'RE", "'r", "'v e",
    "a'LLb'VEc", "'M'M'M",
    # digit runs: llama3 groups of up to 3, qwen2 and smollm one digit, gpt2 the whole run
    "1", "12", "123", "1234", "12345", "123456", "1234567", "12345678", "123456789", "12345678901234567890",
    " 1", " 12345", "  12345", "a1234b", "ab12cd345ef6789", "1,234,567", "1 234 567", "3.14159265358979",
    "-42", "+1234.5678e-90", "v1.2.3-rc4", "0x1F2E3D", "2024-12-31T23:59:59Z", "\u0663\u0664\u0665\u0666\u0667\u0668",
    "\u0661\u0662\u0663\u0664 \u06f1\u06f2\u06f3\u06f4\u06f5", "\uff11\uff12\uff13\uff14\uff15\uff16\uff17",
    "\u00b2\u00b3\u2074\u2075 \u00bd\u00bc\u00be \u2150", "\u216b\u2169\u2163 \u216f", "\u2460\u2461\u2462\u2463",
    "\U0001d7cf\U0001d7d0\U0001d7d1\U0001d7d2", "\u096f\u096e\u096d\u096c\u096b", "\u3007\u4e00\u4e8c\u4e09",
    "12ab34", "1\n2\n3", "12 34 567 8901", "x1234567y", "1234\n5678", "99999 999999", "a 1a 12a 123a 1234a",
    # runs of spaces before words and at the end, newlines with spaces
    "  hello", "   hello   world  ", "hello   ", "hello \n", "hello  \n  world", "a \n b", " \n\n  x", "x  \n  y",
    "\n   \n", "  \t\n\t  ", "\r\n\r\n  ", "\r \r", "\r\r\n\n", " \u00a0x", "\u00a0\u00a0x", "x\u2009\u2009y",
    "\u3000x", "\t\tx", " \tx", "x \t", "end.   ", "   ", "    \n", "\n    x", "\n \n \n", "  \r\n",
    "a\u0085b", "a\u2028b", "\x0b\x0c", "a\x1cb\x1dc", "x\n\n\n   y", "  \n  \n  z", "word \t \n \t word",
    "a     b", "\t \t", " \r\n x", "x\r", "x\r\n\r\n\r\n", " \n", "\n ", "  ", "\u2003\u2003em", "x \u00a0 y",
    # punctuation runs
    "...!!!???", " !!!", "a!!!\n\n", "a!!!\r\n\r\nb", "!!!\n \n", "--->", "=== ===", "#@$%^&*()",
    "$$$ +++ <<< >>> ^^^ ~~~ |||", "`~`", "\u00ab\u00bb\u201e\u201c\u201d\u2018\u2019", "\u3002\u3001\uff01\uff1f\u300c\u300d",
    " ... ", ".\n.\n", "?!\r", "a.b,c;d:e", "(a)[b]{c}<d>", "\\\\//", "__init__", "x+=1;y-=2", ":-) ;-) :D",
    "\u00bb\n\n\u00ab", "\u00a9\u00ae\u2122\u00a7\u00b6\u2020\u2021\u2022", "\u20ac$\u00a3\u00a5\u20b9\u20bf",
    "\u00bd+\u00bd=1", "\u2014\u2013-\u2010", "\u2026\u22ef", " .\n\n\n", "!! \n!!", "*\t*", "a, b,  c,   d",
    "<tag attr=\"1\">", "&amp;&lt;", "%%%%", "@@ -1,4 +1,5 @@",
    # letters with combining marks (\p{M} is not \p{L})
    "e\u0301", "e\u0301\u0301\u0301", "\u0301x", " \u0301x", "\u0301\u0302", "na\u00efve caf\u00e9",
    "Z\u0324\u0354\u0367\u0311\u0313a\u0308\u0356\u032dl\u0354\u033c\u0320g", "\u0939\u093f\u0928\u094d\u0926\u0940 \u092d\u093e\u0937\u093e",
    "\u0915\u094d\u0937\u0924\u094d\u0930\u093f\u092f", "\u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22", "\ufdfa",
    "\u01c5ungla", "\ufb01nal \ufb02ow", "\u0149", "\u0130stanbul \u0131i", "\u03a9mega \u2103 \u212a",
    "\u00df \u1e9e", "\u00c5 vs A\u030a", "\u1112\u1161\u11ab\u1100\u1173\u11af vs \ud55c\uae00", "\u0640\u0640\u0640",
    "x\u200dy", "\u2060word", "a\u0308 o\u0308 u\u0308", " \u0308", "1\u0301", "'\u0301s",
    # CJK, emoji, mixed scripts
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3067\u3059\u3002", "\u4e2d\u6587\uff0cEnglish\uff0c\u65e5\u672c\u8a9e",
    "\u6c49\u5b57123abc", "\ud55c\uad6d\uc5b4123 \ud14c\uc2a4\ud2b8", "\u30ab\u30bf\u30ab\u30ca\u3068\u3072\u3089\u304c\u306a",
    "\U0001f600\U0001f603\U0001f604", "\U0001f469\U0001f3fd\u200d\U0001f4bb coding", "\U0001f1fa\U0001f1f3",
    "abc\U0001f600def", "\U0001f600 \U0001f600  \U0001f600", "\u65e5\u672c \u8a9e",
    "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac123\u0420\u0443\u0441\u0441\u043a\u0438\u0439",
    "mixed\u0391\u03bb\u03c6\u03b1\u0411\u0435\u0442\u0430", "\u05e2\u05d1\u05e8\u05d9\u05eaEnglish",
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629123", "a\u65e5b\u672cc", "\u24b6\u24d1\u24d2",
    "\U0001d518\U0001d52b\U0001d526\U0001d520\U0001d52c\U0001d521\U0001d522", "\U0001f600\U0001f3fb",
    "\U000e0067\U000e0062 tags", "\U0001f44d\U0001f3fd!!! 123 'll", " \U0001f600\n\n \U0001f600",
    # unassigned, private use, noncharacters, controls
    "\u0378\u0379 x", "\ue000\ue001", "\ufffe\uffff", "\U0010ffff", "\U000f0000abc", "\x00\x01\x02",
    "\x7f\x80\x9f", "a\x00 b", " \ufffd ", "\ufeffBOM",
    # longer text: prose, code and numbers together
    "In 2024, Llama 3's tokenizer split 1234567 into 123|456|7; Qwen's into 1|2|3|4|5|6|7. DON'T forget!\n\n",
    "def f(x):\n    return x ** 2  # it's 1234\n\n\nclass A:\n\tpass\r\n",
    "    indented line\n        more indented\n\n\n    back\n",
]

# SmolLM2's control tokens written in the text, with the pre-tokenizer's hard cases around them
SPECIAL_CORPUS = [
    "<|im_start|>user\n  I'M 12345 <|im_end|>\n\n", " <|endoftext|> ", "'<|endoftext|>s", "1234<|im_end|>5678",
    "\n\n<|im_start|>\n\n", "<|im_start|>'s<|im_end|>'LL", "   <|im_end|>   ", "<|im_end|><|im_end|>",
    "<|endoftext|>12345<|endoftext|>", "x<|im_start|>", "<|im_start|", "<|im_start|>system\nYou're a bot.<|im_end|>\n",
    "\u65e5\u672c<|im_end|>\u8a9e", "\U0001f600<|endoftext|>\U0001f600", "  \t<|im_start|>\r\n",
]

# llama.cpp 0.3.36 aborts the process on these with any BPE pre-tokenizer: unicode_cpts_from_utf8
# reads F4 90 80 80 as U+110000, past Unicode, and unicode_cpt_to_utf8 throws std::invalid_argument
# ("invalid codepoint") through the C API. tests/test_tokenizer.c only checks that ft survives them.
LLAMA_CPP_ABORTS = [b"\xf4\x90\x80\x80"]

SEED = 20261207
N_RANDOM = 40


def random_strings():
    """Strings of random runs: each run one class (letters of a script, digits of a system, spaces
    of a kind, punctuation, marks, emoji, contractions, controls, any code point)."""
    rng = random.Random(SEED)

    def rng_cp(lo, hi):
        return chr(rng.randint(lo, hi))
    classes = [
        (8, lambda: rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")),
        (5, lambda: rng.choice("0123456789")),
        (8, lambda: " "),
        (3, lambda: rng.choice("\n\r\t")),
        (2, lambda: rng.choice(["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'VE", "'M", "'LL", "'D", "'", "'Ll"])),
        (4, lambda: rng.choice("!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~'")),
        (2, lambda: rng_cp(0xC0, 0x24F)),                     # Latin-1 and Latin Extended
        (2, lambda: rng_cp(0x300, 0x36F)),                    # combining marks
        (2, lambda: rng_cp(0x391, 0x3C9)),                    # Greek
        (2, lambda: rng_cp(0x410, 0x44F)),                    # Cyrillic
        (2, lambda: rng_cp(0x600, 0x6FF)),                    # Arabic (letters, marks, digits)
        (2, lambda: rng_cp(0x900, 0x97F)),                    # Devanagari (letters, marks, digits)
        (1, lambda: rng_cp(0xE00, 0xE7F)),                    # Thai
        (3, lambda: rng_cp(0x4E00, 0x9FFF)),                  # CJK
        (1, lambda: rng_cp(0x3040, 0x30FF)),                  # kana
        (1, lambda: rng_cp(0xAC00, 0xD7A3)),                  # Hangul
        (2, lambda: rng_cp(0x1F300, 0x1FAFF)),                # emoji
        (1, lambda: rng.choice("\u200d\ufe0f\U0001f3fb\u20e3")),
        (2, lambda: rng.choice("\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
                               "\u2028\u2029\u202f\u205f\u3000\u0085\x0b\x0c")),
        (2, lambda: rng.choice([rng_cp(0xFF10, 0xFF19), rng_cp(0x2070, 0x2079), rng_cp(0xBC, 0xBE),
                                rng_cp(0x2150, 0x2188), rng_cp(0x2460, 0x24FF), rng_cp(0x1D7CE, 0x1D7FF),
                                rng_cp(0x660, 0x669), rng_cp(0x966, 0x96F)])),
        (1, lambda: rng.choice([rng_cp(0x2190, 0x23FF), rng_cp(0x20A0, 0x20C0), rng_cp(0x2010, 0x205E),
                                rng_cp(0x3000, 0x303F), rng_cp(0xFF01, 0xFF0F)])),
        (1, lambda: rng.choice(["\u0378", "\u0530", rng_cp(0xE000, 0xF8FF), "\ufffe", "\uffff", "\U0010fffd",
                                rng_cp(0x0, 0x1F), rng_cp(0x7F, 0x9F), rng_cp(0xE0000, 0xE007F)])),
        (1, lambda: chr(rng.choice([rng.randint(0, 0xD7FF), rng.randint(0xE000, 0x10FFFF)]))),
    ]
    total = sum(w for w, _ in classes)

    def pick():
        r = rng.uniform(0, total)
        for w, f in classes:
            r -= w
            if r <= 0:
                return f
        return classes[-1][1]
    out = []
    for k in range(N_RANDOM):
        n_cp = rng.randint(10, 60) if k < N_RANDOM // 2 else rng.randint(80, 200)
        s = ""
        while len(s) < n_cp:
            f = pick()
            s += "".join(f() for _ in range(rng.choice([1, 1, 1, 2, 3, 4, 5, 7])))
        out.append(s)
    return out


def gguf_kv_blobs(path):
    """(key, raw bytes of the key/value as the file has them) for every key/value of path."""
    from gguf import GGUFReader
    r = GGUFReader(path)
    out = []
    for key, f in r.fields.items():
        if key.startswith("GGUF."):
            continue
        out.append((key, b"".join(bytes(p.tobytes()) for p in f.parts)))
    return out


def extra_vocab():
    """Tokens and merges appended to SmolLM2's vocabulary, which has no token of two or more digits
    (its own pre-tokenizer gives every digit a word) and so would hide how the families group
    digits: "00".."99" with the merges "0 0".."9 9", then "000".."999" with the merges "00 0".."89 9"
    (none for the triples that begin with 9: only ignore_merges makes "987" one token), then
    "zqxj" and "\u0120zqxj" (" zqxj" as byte chars) with no merges at all, the same probe for words."""
    digits = "0123456789"
    tokens = [a + b for a in digits for b in digits] + [a + b + c for a in digits for b in digits for c in digits]
    merges = [a + " " + b for a in digits for b in digits] + [a + b + " " + c for a in digits for b in digits for c in digits if a != "9"]
    tokens += ["zqxj", "\u0120zqxj"]
    return [t.encode() for t in tokens], [m.encode() for m in merges]


def with_extra(blobs, rd, extra_tokens, extra_merges):
    """blobs with the tokens (type 1, normal) and merges appended and llama.vocab_size updated."""
    def key(k):
        return struct.pack("<Q", len(k)) + k.encode()

    def str_array(k, items):
        return key(k) + struct.pack("<IIQ", 9, 8, len(items)) + b"".join(struct.pack("<Q", len(x)) + x for x in items)
    tk, tt, mg = (rd.fields["tokenizer.ggml." + k] for k in ("tokens", "token_type", "merges"))
    tokens = [bytes(tk.parts[i]) for i in tk.data]
    assert not set(tokens) & set(extra_tokens), "an extra token is in the vocabulary already"
    types = [int(tt.parts[i][0]) for i in tt.data] + [1] * len(extra_tokens)
    assert tt.types[-1] == 5        # INT32
    new = {"tokenizer.ggml.tokens": str_array("tokenizer.ggml.tokens", tokens + extra_tokens),
           "tokenizer.ggml.token_type": key("tokenizer.ggml.token_type") + struct.pack("<IIQ", 9, 5, len(types)) + struct.pack(f"<{len(types)}i", *types),
           "tokenizer.ggml.merges": str_array("tokenizer.ggml.merges", [bytes(mg.parts[i]) for i in mg.data] + extra_merges)}
    vs = rd.fields.get("llama.vocab_size")
    if vs is not None:
        new["llama.vocab_size"] = key("llama.vocab_size") + struct.pack("<I", int(vs.types[0])) + \
            np_scalar(vs.types[0], len(tokens) + len(extra_tokens))
    return [(k, new.get(k, b)) for k, b in blobs]


def np_scalar(t, v):
    return struct.pack({4: "<I", 5: "<i", 10: "<Q", 11: "<q"}[int(t)], v)


def write_vocab_gguf(path, blobs, pre):
    """A GGUF v3 with no tensors and blobs' key/values, tokenizer.ggml.pre set to pre."""
    def kv_str(key, s):
        k, v = key.encode(), s.encode()
        return struct.pack("<Q", len(k)) + k + struct.pack("<IQ", 8, len(v)) + v
    kvs = [kv_str(k, pre) if k == "tokenizer.ggml.pre" else b for k, b in blobs]
    if not any(k == "tokenizer.ggml.pre" for k, _ in blobs):
        kvs.append(kv_str("tokenizer.ggml.pre", pre))
    with open(path, "wb") as fo:
        fo.write(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs))


def hexs(b):
    return b.hex() if b else "-"


def main():
    import llama_cpp
    errors = []                            # llama.cpp's log lines (why a load failed)

    @llama_cpp.llama_log_callback
    def capture(level, text, user_data):
        if level != 5 or errors:           # GGML_LOG_LEVEL_CONT continues the line before
            errors.append(text.decode("utf-8", "replace").strip())
    llama_cpp.llama_log_set(capture, ctypes.c_void_p(0))
    model = sys.argv[1]
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "..", "..", "tests", "fixtures", "tokenizer_pre.txt")
    from gguf import GGUFReader
    rd = GGUFReader(model)
    extra_tokens, extra_merges = extra_vocab()
    blobs = with_extra(gguf_kv_blobs(model), rd, extra_tokens, extra_merges)
    tk, tt = rd.fields["tokenizer.ggml.tokens"], rd.fields["tokenizer.ggml.token_type"]
    controls = [bytes(tk.parts[tk.data[i]]) for i in range(len(tk.data)) if int(tt.parts[tt.data[i]][0]) == 3]

    strings = [s if isinstance(s, bytes) else s.encode() for s in
               CORPUS + GEMMA_CORPUS + PRE_CORPUS + SPECIAL_CORPUS + random_strings() + RAW + GEMMA_RAW]
    seen, uniq = set(), []
    for b in strings:                      # the corpora overlap a little
        if b in LLAMA_CPP_ABORTS:
            continue
        if b not in seen:
            seen.add(b)
            uniq.append(b)
    strings = uniq

    names, refused, ids = [], [], {}       # ids[name] = ([special=False ids], [special=True ids or None])
    with tempfile.TemporaryDirectory() as tmp:
        for name in PRE_NAMES:
            path = os.path.join(tmp, "vocab.gguf")
            write_vocab_gguf(path, blobs, name)
            errors.clear()
            try:
                llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
            except Exception as e:  # noqa: BLE001  (llama.cpp throws on an unknown pre name)
                why = next((x for x in errors if "error loading model vocabulary" in x), str(e)).replace("\n", " ")
                refused.append((name, why))
                print(f"llama.cpp refuses pre {name!r}: {why}", file=sys.stderr)
                continue
            plain = [llm.tokenize(b, add_bos=False, special=False) for b in strings]
            spec = [llm.tokenize(b, add_bos=False, special=True) if any(c in b for c in controls) else None for b in strings]
            ids[name] = (plain, spec)
            names.append(name)
            del llm

    lines = [f"# generated by tools/ref/pretokenizer_fixtures.py from {os.path.basename(model)} with tokenizer.ggml.pre replaced",
             f"# llama-cpp-python {llama_cpp.__version__}: Llama(vocab_only=True).tokenize(add_bos=False, special=False) (I), special=True (J)"]
    lines += [f"T {t.hex()}" for t in extra_tokens] + [f"M {m.hex()}" for m in extra_merges]
    lines += [f"N {i} {n}" for i, n in enumerate(names)]
    lines += [f"R {n} {msg}" for n, msg in refused]
    for k, b in enumerate(strings):
        lines.append("S " + hexs(b))
        for tag, which in (("I", 0), ("J", 1)):
            groups = {}
            for i, n in enumerate(names):
                v = ids[n][which][k]
                if v is not None:
                    groups.setdefault(tuple(v), []).append(i)
            for v, idx in groups.items():
                lines.append(f"{tag} " + ",".join(map(str, idx)) + f" {len(v)} " + " ".join(map(str, v)))
    open(out, "w").write("\n".join(lines) + "\n")

    # how the names group: names whose ids agree on every string
    sig = {}
    for n in names:
        sig.setdefault(tuple(tuple(x) for x in ids[n][0]) + tuple(tuple(x) if x else () for x in ids[n][1]), []).append(n)
    n_spec = sum(1 for x in ids[names[0]][1] if x is not None)
    print(f"wrote {out}: {len(strings)} strings ({n_spec} also with special=True) for {len(names)} pre names "
          f"({len(refused)} refused by llama.cpp); {len(sig)} distinct behaviours:", file=sys.stderr)
    for g in sig.values():
        print("   ", " ".join(g), file=sys.stderr)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Reference token ids for finetune.h's tokenizer, from llama.cpp and from Hugging Face.

    pip install gguf numpy transformers tokenizers llama-cpp-python jinja2
    python3 tools/ref/tokenizer_fixtures.py MODEL.gguf [OUT]

MODEL.gguf: SmolLM2-135M-Instruct (tools/fetch-model prints its path; OUT defaults to
tests/fixtures/tokenizer_smollm2.txt) or Gemma 3 270M (tools/fetch-model gemma3; OUT defaults to
tests/fixtures/tokenizer_gemma3.txt), told apart by general.architecture. Line format (one record
per line, '#' starts a comment):

    S <hex of the UTF-8 bytes, or - for the empty string>    a test string
    L <n> <id> ...      llama.cpp: Llama(vocab_only=True).tokenize(bytes, add_bos, special=True), with
                        add_bos = the model's tokenizer.ggml.add_bos_token (SmolLM2 false, Gemma 3
                        true: its L lines begin with <bos> = 2)
    H <n> <id> ...      Hugging Face tokenizer built from the same GGUF (add_special_tokens=False);
                        absent when HF cannot take the string (invalid UTF-8) or is not installed
                        (SmolLM2 only)
    D <hex or ->        llama.cpp's llama_detokenize(the L ids, remove_special=True,
                        unparse_special=True): the text back, the added BOS removed (Gemma 3 only)
    T <hex>             the chat template (tokenizer.chat_template; SmolLM2 only)
    CL <hex>            llama.cpp's llama_chat_apply_template of the conversation below
    CH <hex>            Hugging Face's apply_chat_template (jinja) of the same conversation
    CLG / CHG           the same with add_generation_prompt
    GL <hex> / GLG <hex>  Gemma 3 only (its file has no template): llama.cpp's built-in "gemma"
                        format, llama_chat_apply_template("gemma", ...), of GEMMA_CONV below

The conversation: [user "Hi there!", assistant "Hello! How can I help?"].

Gemma 3 (llama.cpp only, no Hugging Face tokenizer here) gets the corpus of SmolLM2 and GEMMA_CORPUS
(more languages and scripts, emoji sequences, whitespace runs that Gemma has tokens for, code,
numbers, its control and user-defined tokens written in the text, byte-fallback characters) and
GEMMA_RAW (more invalid UTF-8).
"""
import ctypes
import os
import sys

CORPUS = [
    "", " ", "  ", "\t", "\n", "\n\n", " \n ", "a", "Hello world", "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "don't", "I'll", "we're", "you've", "she'd", "it's", "'ll", "'s", "DON'T", "O'Neil's",
    "12", "2024", "1234567890", "3.14159", "x = 1e-10 + 0xFF", "Phone: +1 (555) 123-4567",
    "    indented", "def f(x):\n    return x * 2\n", "if (a) {\n\tb();\n}\n",
    "a  b   c    d", "trailing   ", "   leading", "tabs\t\tand\t spaces", "line1\r\nline2\r\n",
    "mixed \n\n\t  whitespace\n   ", "emoji 😀🎉👍🏽 ok", "🤗", "日本語のテキスト", "中文分词测试",
    "한국어 텍스트", "café naïve résumé", "Ünïcödé Ñandú", "مرحبا بالعالم", "Привет, мир!",
    "ελληνικά", "עברית", "हिन्दी", "tiếng Việt", "½ ⅓ Ⅻ ²³ ٣٤٥",
    "<|im_start|>user\nhi<|im_end|>", "<|im_start|>system\nYou are a bot.<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>", "text<|endoftext|>more", "<|im_start|><|im_end|>", "< |im_start| >",
    "<jupyter_code>print(1)", "a<repo_name>b", "``` python\nprint('hi')\n```",
    "https://example.com/path?q=1&r=2#frag", "snake_case_identifier camelCaseIdentifier",
    "!!!???...,,,", "\u00a0non-breaking\u2003em space\u3000ideographic", "zero\u200bwidth",
    "a" * 300, "ab" * 150 + " " + "9" * 40,
]
# bytes that are not valid UTF-8: llama.cpp only (each bad byte reads as U+FFFD)
RAW = [b"\xff\xfe", b"ok\xc3(", b"\xe2\x82", b"a\x80b", b"\xf0\x9f\x98"]

CONV = [("user", "Hi there!"), ("assistant", "Hello! How can I help?")]

GEMMA_CORPUS = [
    # languages and scripts
    "Ελληνικά: Καλημέρα κόσμε", "ภาษาไทยไม่มีช่องว่างระหว่างคำ", "ქართული ენა", "Հայերեն լեզու", "አማርኛ ቋንቋ",
    "தமிழ் மொழி", "বাংলা ভাষা", "ગુજરાતી ભાષા", "ಕನ್ನಡ", "മലയാളം", "తెలుగు", "ਪੰਜਾਬੀ", "සිංහල", "ភាសាខ្មែរ",
    "ພາສາລາວ", "မြန်မာဘာသာ", "བོད་ཡིག", "ᠮᠣᠩᠭᠣᠯ ᠪᠢᠴᠢᠭ", "ᏣᎳᎩ ᎦᏬᏂᎯᏍᏗ", "ᐃᓄᒃᑎᑐᑦ",
    "Türkçe: İstanbul'da ılık bir gün", "Straße, Größe, Maß", "Tiếng Việt: Đường phố Hà Nội",
    "Polski: Zażółć gęślą jaźń", "Čeština: Příliš žluťoučký kůň úpěl ďábelské ódy", "Íslenska: Þórður fæddist",
    "Română: ședință, țară", "Español: ¿Qué tal? ¡Muy bien!", "Français : « guillemets » et l’apostrophe",
    "日本語：ひらがな、カタカナ、漢字。ｶﾀｶﾅ", "繁體中文與简体中文混合", "한국어: 안녕하세요, 세계!", "עִבְרִית עִם נִיקּוּד",
    "العربية مع التشكيل: مَرْحَبًا بِكُمْ", "فارسی: سلام دنیا", "اردو: ہیلو ورلڈ", "Русский: Съешь же ещё этих мягких французских булок",
    "Українська: ґанок, їжак, єнот", "Қазақ тілі", "Esperanto: ĉiuĵaŭde", "Kiswahili: Habari za asubuhi?",
    "Yorùbá: Ẹ kú àárọ̀", "ʻŌlelo Hawaiʻi", "Ελληνικά και English και 日本語 in one line",
    # emoji
    "👨‍👩‍👧‍👦 family", "🏳️‍🌈 🏴‍☠️", "🇩🇪🇯🇵🇺🇸🇧🇷", "1️⃣ #️⃣ ❤️ ❤ ✔︎", "👍🏻👍🏼👍🏽👍🏾👍🏿", "🧑‍💻 🧑🏽‍🚀", "🫠🫶🪿🫨🪼",
    "😀" * 10, "I ❤️ NY 🗽!",
    # whitespace runs, tabs and newlines
    " " * 31, " " * 32, " " * 45, "\t" * 31, "\t" * 40, "\n" * 31, "\n" * 40, "a \t b\t \tc", " \n \n \n",
    "\r\n\r\n", "\r", "\v\f", "end with spaces    \n\n", "x\n\n\n\ny", "\t\tindented\n\t\t\tmore",
    "  two leading", "\u3000\u3000全角スペース", "\u2028line sep\u2029para sep", "\u200d\u200c\ufeffBOM",
    # code
    "import numpy as np\n\n\nclass Model(nn.Module):\n    def __init__(self):\n        super().__init__()\n",
    "#include <stdio.h>\nint main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    '{"name": "gemma", "layers": 18, "tied": true, "eps": 1e-06, "list": [1, 2, 3]}',
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC;",
    "for f in *.txt; do wc -l \"$f\" | awk '{print $1}'; done 2>&1 | sort -n",
    r"^(?:[a-z0-9!#$%&'*+/=?^_`{|}~-]+)@\w+\.(com|org)$",
    r"\frac{\partial L}{\partial w} = \sum_{i=1}^{n} x_i (\hat{y}_i - y_i)",
    "| col | value |\n|-----|------:|\n| a   |   1.5 |",
    "fn main() -> Result<(), Box<dyn Error>> { Ok(()) }",
    # numbers
    "3.141592653589793238462643383279", "1,234,567.89 and 1.234.567,89", "-0.0001 +42 1e+308 6.022e23",
    "0b1011 0o777 0xDEADBEEF", "２０２４年１２月３１日", "٠١٢٣٤٥٦٧٨٩ ۰۱۲۳", "१२३४५", "Ⅰ Ⅱ Ⅲ Ⅳ ⅻ",
    "12:30:45.678 UTC+05:30", "99.9% ± 0.1‰", "1/2 ¼ ⅞ 10²⁵ H₂O", "0000000000000000000000001",
    # special tokens written in the text (parsed: special=True)
    "<start_of_turn>user\nHello!<end_of_turn>\n<start_of_turn>model\n", "<start_of_turn>", "<end_of_turn>",
    "<bos>", "<pad>", "<eos>", "<unk>", "<mask>", "<bos><bos>text", "text<pad><pad>",
    "<start_of_turn>model\nSure.<end_of_turn><eos>", "< start_of_turn >", "<start_of_turn", "start_of_turn>",
    "<<start_of_turn>>", "<START_OF_TURN>", "<unused0><unused6241>", "<start_of_image><end_of_image>", "[multimodal]",
    "<table><tr><td>1</td></tr></table>", "<h1>Title</h1><b>bold</b> <s>struck</s>", "<div class=\"x\">",
    "<B>upper</B>", "<0x41><0x0A>", " <bos> spaced <eos> ",
    # byte fallback: characters the vocabulary lacks
    "𠀀𠀁𪚥", "𓀀𓁐", "𒀀𒀁", "𐀀𐀁", "\ue000\uf8ff", "\U000F0000\U0010FFFD", "\x01\x02\x1b[0m\x7f", "a\x00b",
    "ǅ ﬁ ﬀ", "Ａ Ｂ Ｃ", "e\u0301 vs \u00e9", "Z\u0324\u0354\u0367\u0311\u0313a\u0308\u0356\u032dl\u036e\u0312g\u030co",
]
# more bytes that are not valid UTF-8
GEMMA_RAW = [b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"caf\xe9", b"\x80\x81\x82", b"ok\xff<bos>\xfe"]

GEMMA_CONV = [("system", "  Be brief. "), ("user", " Hi there! "), ("assistant", "Hello! How can I help?\n"),
              ("user", "What is 2+2?")]


def hexs(b):
    return b.hex() if b else "-"


def ids_line(tag, ids):
    return f"{tag} {len(ids)} " + " ".join(str(i) for i in ids)


def load_hf(model):
    """HF's tokenizer built from the GGUF (transformers' own GGUF conversion). transformers'
    GGUF reader imports torch, though tokenizers need none of it: without torch, a stand-in
    module lets the conversion code load (it touches no torch function for the tokenizer)."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        print("no transformers: H lines left out", file=sys.stderr)
        return None
    try:
        import torch  # noqa: F401
    except ImportError:
        import importlib.machinery
        import types

        class _Any(types.ModuleType):
            def __getattr__(self, name):
                if name.startswith("__"):
                    raise AttributeError(name)
                return type(name, (), {})
        stub = _Any("torch")
        stub.__spec__ = importlib.machinery.ModuleSpec("torch", None)
        sys.modules["torch"] = stub
    try:
        from transformers import PreTrainedTokenizerFast
        from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer, get_gguf_tokenizer
        arch, tdict, tconf = get_gguf_tokenizer(model)
        fast, extra = convert_gguf_tokenizer(arch, tdict)
        tconf = dict(tconf, **extra)
        return PreTrainedTokenizerFast(tokenizer_object=fast, **tconf)
    except Exception as e:  # noqa: BLE001
        print("no Hugging Face tokenizer:", e, file=sys.stderr)
        return None


def chat_apply(template, conv, gen):
    """llama.cpp's llama_chat_apply_template (a template text or a built-in name)."""
    import llama_cpp
    Msg = llama_cpp.llama_chat_message
    arr = (Msg * len(conv))(*[Msg(r.encode(), c.encode()) for r, c in conv])
    buf = ctypes.create_string_buffer(4096)
    n = llama_cpp.llama_chat_apply_template(template, arr, len(conv), gen, buf, len(buf))
    if n < 0 or n > len(buf):
        raise RuntimeError("llama_chat_apply_template: %d" % n)
    return buf.raw[:n]


def detokenize(llm, ids):
    """llama.cpp's llama_detokenize(remove_special=True, unparse_special=True)."""
    import llama_cpp
    arr = (llama_cpp.llama_token * max(len(ids), 1))(*ids)
    cap = 64 + 64 * len(ids)
    buf = ctypes.create_string_buffer(cap)
    n = llama_cpp.llama_detokenize(llm._model.vocab, arr, len(ids), buf, cap, True, True)
    if n < 0:
        raise RuntimeError("llama_detokenize: %d" % n)
    return buf.raw[:n]


def main_gemma(model, out):
    import llama_cpp
    llm = llama_cpp.Llama(model_path=model, vocab_only=True, verbose=False)
    add_bos = bool(llm._model.add_bos_token())
    lines = [f"# generated by tools/ref/tokenizer_fixtures.py from {os.path.basename(model)}",
             f"# llama-cpp-python {llama_cpp.__version__}; L: tokenize(add_bos={add_bos}, special=True); "
             "D: detokenize(remove_special=True, unparse_special=True)"]
    n_rt = 0
    strings = CORPUS + GEMMA_CORPUS + RAW + GEMMA_RAW
    for s in strings:
        b = s if isinstance(s, bytes) else s.encode()
        lines.append("S " + hexs(b))
        lid = llm.tokenize(b, add_bos=add_bos, special=True)
        lines.append(ids_line("L", lid))
        d = detokenize(llm, lid)
        lines.append("D " + hexs(d))
        n_rt += d == b
    for tag, gen in (("GL", False), ("GLG", True)):
        lines.append(f"{tag} " + hexs(chat_apply(b"gemma", GEMMA_CONV, gen)))
    open(out, "w").write("\n".join(lines) + "\n")
    print(f"wrote {out}: {len(strings)} strings, {n_rt} of them round-trip through llama.cpp's detokenize", file=sys.stderr)


def main():
    model = sys.argv[1]
    here = os.path.dirname(os.path.abspath(__file__))
    from gguf import GGUFReader
    f = GGUFReader(model).fields["general.architecture"]
    arch = bytes(f.parts[f.data[0]]).decode()
    if arch == "gemma3":
        out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "..", "..", "tests", "fixtures", "tokenizer_gemma3.txt")
        return main_gemma(model, out)
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "..", "..", "tests", "fixtures", "tokenizer_smollm2.txt")
    import llama_cpp
    llm = llama_cpp.Llama(model_path=model, vocab_only=True, verbose=False)
    hf = load_hf(model)
    from gguf import GGUFReader
    f = GGUFReader(model).fields["tokenizer.chat_template"]
    template = bytes(f.parts[f.data[0]]).decode()

    lines = [f"# generated by tools/ref/tokenizer_fixtures.py from {os.path.basename(model)}",
             f"# llama-cpp-python {llama_cpp.__version__}" + (f", transformers {__import__('transformers').__version__}" if hf else "")]
    n_diff = 0
    for s in CORPUS + RAW:
        b = s if isinstance(s, bytes) else s.encode()
        lines.append("S " + hexs(b))
        lid = llm.tokenize(b, add_bos=False, special=True)
        lines.append(ids_line("L", lid))
        if hf is not None and not isinstance(s, bytes):
            hid = hf.encode(s, add_special_tokens=False)
            lines.append(ids_line("H", hid))
            if hid != lid:
                n_diff += 1
                print(f"llama.cpp and HF differ on {s!r}:\n  llama.cpp {lid}\n  HF        {hid}", file=sys.stderr)
                lines.append("# llama.cpp and HF differ on the string above")

    # chat templates
    lines.append("T " + hexs(template.encode()))

    for tag, gen in (("CL", False), ("CLG", True)):
        lines.append(f"{tag} " + hexs(chat_apply(template.encode(), CONV, gen)))
    msgs = [{"role": r, "content": c} for r, c in CONV]
    for tag, gen in (("CH", False), ("CHG", True)):
        if hf is not None and getattr(hf, "chat_template", None):
            txt = hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
        else:
            import jinja2
            txt = jinja2.Environment().from_string(template).render(messages=msgs, add_generation_prompt=gen)
        lines.append(f"{tag} " + hexs(txt.encode()))
    open(out, "w").write("\n".join(lines) + "\n")
    print(f"wrote {out}: {len(CORPUS) + len(RAW)} strings, {n_diff} where llama.cpp and HF differ", file=sys.stderr)


if __name__ == "__main__":
    main()

# Writes bpe_reference.json: prompt -> token ids from glide-text2im's own
# tokenizer (glide_text2im/tokenizer/bpe.py, get_encoder().encode), for
# hand-picked hard cases and seeded random strings over many scripts,
# whitespace kinds, digits, marks and emoji.
# Run: python3 bpe_reference.py /path/to/glide-text2im
#      (needs the `regex` module; made with Python 3.11.7, regex 2026.5.9,
#      glide-text2im 69b5307)
import json, random, sys

sys.path.insert(0, sys.argv[1])
from glide_text2im.tokenizer.bpe import get_encoder

enc = get_encoder()

cases = [
    "", " ", "  ", "a", "A", "a  b", "a   b ", " a", "\ta\n", "a\n\nb", "a \n b", "\n", "   \n  x",
    "an oil painting of a corgi wearing a party hat",
    "A HEDGEHOG USING A CALCULATOR", "It's", "IT'S", "they'll've", "don't", "DON'T", "o'clock", "'s", "’s",
    "rock'n'roll", "123", "1234567", "3.14159", "1,000,000", "2x4", "a1b2c3", "¼ ½ ¾ ² ³ ⅷ Ⅻ", "٣٤ ४५",
    "hello!!!", "wow?!", "...", "--", "(a)", "[x]", "{y}", "#hashtag", "@user", "e-mail", "C++", "$100", "50%",
    "naïve café", "Straße", "İstanbul", "ΣΟΦΟΣ", "Σ", "ΑΣ", "ΑΣ.", "ΑΣ'Β", "ὈΔΥΣΣΕΎΣ", "ǅ ǈ ǋ", "ﬁ ﬂ",
    "Привет, мир", "こんにちは世界", "你好，世界", "안녕하세요", "مرحبا بالعالم", "नमस्ते दुनिया", "שלום",
    "e\u0301", "a\u0308o\u0308", "\u0915\u094d\u0937", "🙂", "👍🏽", "👩‍👩‍👧", "🇫🇷", "☕ ☃ ★", "𝐀𝐁𝐂", "𝔞𝔟",
    "a\u00a0b", "a\u2000b", "a\u2028b", "a\u2029b", "a\u202fb", "a\u205fb", "a\u3000b", "a\u1680b", "a\u180eb",
    "a\u200bb", "a\ufeffb", "a\x0bb", "a\x0cb", "a\rb", "a\x1cb", "a\x1db", "a\x1eb", "a\x1fb", "a\x85b", "a\x00b",
    "a \u00a0 b", "x\u00a0", "\u3000\u3000y", "tab\t\tsep", "<|endoftext|>", "a <|endoftext|> b",
    "x" * 60, " ".join(["word"] * 20), "supercalifragilisticexpialidocious",
    "pneumonoultramicroscopicsilicovolcanoconiosis", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
]

pools = [
    "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", " " * 8, "\t\n\r\x0b\x0c",
    ".,;:!?'\"-_()[]{}<>/\\|@#$%^&*+=~`", "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿßÀÉÎÕÜŒœ", "ΑΒΓΔΣΩαβγδσςωΌΐ",
    "абвгдеёжзийАБВГДЁЖЗ", "日本語中文字漢字かなカナ", "한국어글자", "عربيةفارسی", "हिन्दीक्ष",
    "\u0300\u0301\u0308\u0327\u20dd", "\u00a0\u2000\u2009\u200a\u2028\u2029\u202f\u205f\u3000\u1680\x85\x1c\x1f",
    "\u200b\u200c\u200d\ufeff\u00ad", "½²³٣४Ⅻ①", "🙂😀🎉🐱🌍☕★♥✓👍🏽", "İıŉǅǰẞ", "’‘“”…–—·",
]

rng = random.Random(20240601)
for _ in range(400):
    n = rng.randint(1, 30)
    chosen = rng.sample(pools, rng.randint(1, 4))
    s = "".join(rng.choice(rng.choice(chosen)) for _ in range(n))
    cases.append(s)

out = {}
for s in cases:
    out[s] = enc.encode(s)
with open("bpe_reference.json", "w", encoding="utf-8") as fh:
    fh.write("{\n")
    fh.write(",\n".join(json.dumps(k) + ": " + json.dumps(v, separators=(",", ":")) for k, v in out.items()))
    fh.write("\n}\n")
print(len(out), "prompts")

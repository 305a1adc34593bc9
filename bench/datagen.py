# ruff: noqa: RUF001  (full-width punctuation is the point: real Japanese text uses it)
"""A reproducible chat JSONL of any size, in English and Japanese.

Every example is a system prompt and one to three user/assistant turns.
About half the conversations are Japanese (kanji, kana and the 、。
punctuation real text has, so the tokenizer sees realistic pieces), the rest
English, with the occasional mixed turn. The same seed and size always give
the same bytes, so figures from different runs describe the same input.
Files are cached under the system temp directory by (seed, size).
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

EN_WORDS = (
    "the model answers every question about shipping orders refunds accounts billing "
    "invoices passwords delivery warehouse customer support team weekend schedule price "
    "discount subscription plan upgrade downgrade cancel renew contract policy privacy "
    "data export import report dashboard metrics chart error timeout retry network server "
    "client browser mobile app version release feature request bug fix patch update "
    "install configure setting option default custom template document page section "
    "paragraph sentence word letter number date time zone region country city street "
    "address phone email message notification alert reminder calendar meeting agenda "
    "project task deadline priority status progress review approval comment feedback "
    "quality test result sample batch queue worker process thread memory disk storage "
    "backup restore archive folder file name size format image video audio text table "
    "row column cell value total average maximum minimum quickly carefully usually never "
    "always often sometimes please thanks sorry hello welcome again later today tomorrow "
    "yesterday morning evening night because although however therefore instead while "
    "before after during until unless whether which where when why how what who can "
    "should would could might must will shall is are was were be been being have has had "
    "do does did make makes made take takes took give gives gave find finds found check "
    "checks checked send sends sent open opens opened close closes closed"
).split()

JA_WORDS = (
    "注文 配送 返金 アカウント 請求書 パスワード 倉庫 お客様 サポート 担当者 週末 予定 価格 "
    "割引 定期購入 プラン 契約 規約 個人情報 データ 書き出し 読み込み 報告 画面 指標 図表 "
    "エラー 時間切れ 再試行 ネットワーク サーバー ブラウザ スマートフォン アプリ 新機能 "
    "不具合 修正 更新 設定 初期値 文書 段落 文章 単語 日付 時刻 地域 住所 電話番号 "
    "メール 通知 会議 議題 案件 締め切り 優先度 進捗 確認 承認 意見 品質 試験 結果 "
    "処理 記憶領域 保存 復元 ファイル 画像 動画 音声 表 合計 平均 最大 最小 東京 大阪 "
    "京都 北海道 ひろゆき 論破 それって 感想 根拠 統計 会社 仕事 給料 電車 天気 料理"
).split()
JA_PARTICLES = ("は", "が", "を", "に", "で", "と", "の", "から", "まで", "より", "も")
# Full-width punctuation is what Japanese text uses; the tokenizer must see it.
JA_ENDINGS = (
    "です。",
    "ます。",
    "でしょうか？",
    "ません。",
    "してください。",
    "だと思います。",
    "なんですよね。",
    "ってことですか？",
    "できますか？",
    "しました。",
)
EN_SYSTEM = (
    "You are a helpful support assistant for an online shop. Answer briefly and politely.",
    "You are a terse assistant that answers with facts only.",
    "You help engineers debug their deployments; ask for logs when unsure.",
)
JA_SYSTEM = (
    "あなたは丁寧なカスタマーサポートです。短く答えてください。",
    "西村ひろゆきBot",
    "あなたは社内ヘルプデスクの担当者です。",
)


def _en_sentence(rng: random.Random) -> str:
    words = rng.choices(EN_WORDS, k=rng.randint(6, 18))
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice((".", ".", ".", "?", "!"))


def _ja_sentence(rng: random.Random) -> str:
    parts = []
    for index in range(rng.randint(3, 7)):
        parts.append(rng.choice(JA_WORDS))
        parts.append(rng.choice(JA_PARTICLES))
        if index and rng.random() < 0.25:
            parts.append("、")
    parts.append(rng.choice(JA_WORDS))
    parts.append(rng.choice(JA_ENDINGS))
    return "".join(parts)


def _text(rng: random.Random, japanese: bool, low: int, high: int) -> str:
    sentence = _ja_sentence if japanese else _en_sentence
    joiner = "" if japanese else " "
    return joiner.join(sentence(rng) for _ in range(rng.randint(low, high)))


def example(rng: random.Random) -> dict[str, object]:
    japanese = rng.random() < 0.5
    messages: list[dict[str, str]] = [
        {"role": "system", "content": rng.choice(JA_SYSTEM if japanese else EN_SYSTEM)}
    ]
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        # One turn in ten answers in the other language.
        answer_japanese = japanese if rng.random() < 0.9 else not japanese
        messages.append({"role": "user", "content": _text(rng, japanese, 1, 3)})
        messages.append({"role": "assistant", "content": _text(rng, answer_japanese, 2, 8)})
    return {"messages": messages}


def write_chat_jsonl(path: Path, size_bytes: int, seed: int) -> int:
    """Write whole lines until the file reaches `size_bytes`; returns the example count."""
    rng = random.Random(seed)
    written = count = 0
    with path.open("wb") as out:
        while written < size_bytes:
            line = (json.dumps(example(rng), ensure_ascii=False) + "\n").encode()
            out.write(line)
            written += len(line)
            count += 1
    return count


def chat_jsonl(mb: float, seed: int = 20261101) -> Path:
    """The cached file for (mb, seed), generated on first use."""
    cache = Path(tempfile.gettempdir()) / "ft-bench-data"
    cache.mkdir(exist_ok=True)
    path = cache / f"chat-{mb:g}mb-seed{seed}.jsonl"
    if not path.exists():
        partial = path.with_suffix(".partial")
        write_chat_jsonl(partial, int(mb * 1024 * 1024), seed)
        partial.replace(path)
    return path

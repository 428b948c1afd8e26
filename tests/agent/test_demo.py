"""The README's first command, offline: ``voice-agent demo --lang ko`` with each embedded broker."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from agent.cli import main


@pytest.mark.parametrize("broker", ["mosquitto", "amqtt"])
def test_korean_demo_prints_every_message(broker: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--lang", "ko", "--broker", broker]) == 0
    out = capsys.readouterr().out
    assert f"MQTT broker embedded {broker} on 127.0.0.1:" in out
    assert 'said   "okay nabu, 부엌 조명 좀 켜줘"\nheard  "부엌 조명 좀 켜줘" -> LightOn (0.' in out
    # The command said without the wake word is not even decoded.
    assert (
        'said   "거실 조명 꺼 줘 (no wake word)"\n'
        "heard  nothing: no wake word, so the command was not listened to\n\n"
    ) in out
    assert "room=kitchen" in out and "room=living_room" in out
    assert '    zigbee2mqtt/kitchen_light/set {"state":"ON"}\n' in out
    assert '    zigbee2mqtt/living_room_light/set {"state":"OFF"}\n' in out
    assert 'heard  "오늘 날씨 어때" -> not recognized (out_of_scope)' in out
    assert '    voice-agent/media/command {"command":"pause"}\n' in out
    intents = [
        json.loads(line.split(" ", 1)[1])
        for line in (raw.strip() for raw in out.splitlines())
        if line.startswith("hermes/intent/")
    ]
    assert [i["intent"]["intentName"] for i in intents] == ["LightOn", "LightOff", "MusicStop"]
    assert all(i["siteId"] == "demo" for i in intents)
    assert all(i["wakewordId"] == "okay_nabu" for i in intents)
    assert out.count("    hermes/hotword/okay_nabu/detected {") == 4
    assert out.rstrip().endswith(
        "5 utterances: 4 after the wake word (3 commands, 1 not recognized), 1 without it"
        " (ignored); 15 messages acknowledged by the broker."
    )


def _online() -> bool:
    try:
        socket.create_connection(("alphacephei.com", 443), timeout=3).close()
    except OSError:
        return False
    return True


def test_english_demo_offline_says_why_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if _online():
        pytest.skip("alphacephei.com is reachable: the demo would download the 40 MB model")
    assert main(["demo", "--vosk-dir", str(tmp_path / "vosk")]) == 2
    captured = capsys.readouterr()
    assert captured.out == (
        f"downloading the Vosk model vosk-model-small-en-us-0.15 into {tmp_path / 'vosk'}"
        " (once) ...\n"
    )
    err = captured.err
    assert err.count("\n") == 1
    assert err.startswith(
        "voice-agent: error: https://alphacephei.com/vosk/models/vosk-model-small-en-us-0.15.zip: "
    )
    assert err.endswith("(the Korean demo runs offline: voice-agent demo --lang ko)\n")
    # Nothing half-downloaded is left behind, not even the folder it made.
    assert not (tmp_path / "vosk").exists()

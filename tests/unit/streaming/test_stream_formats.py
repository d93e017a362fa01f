"""The field scanners: where one output field's text starts and ends in a stream of LM text chunks."""

from __future__ import annotations

import pytest

from dspex.streaming._formats import MAX_HELD, partial_chat_marker, scanner_for


def scan(fmt: str, field: str, chunks: list[str], *, finish: bool = False) -> list[tuple[str, bool]]:
    scanner = scanner_for(fmt, field)  # type: ignore[arg-type]
    pieces = [piece for chunk in chunks for piece in scanner.feed(chunk)]
    return pieces + (scanner.finish() if finish else [])


def test_chat_tokens_come_out_one_per_chunk_and_the_marker_chunk_ends_the_field() -> None:
    chunks = [
        "[[",
        " ##",
        " answer",
        " ##",
        " ]]\n\n",
        "To",
        " get",
        " there",
        "!\n\n[[ ##",
        " completed",
        " ## ]]",
    ]
    assert scan("chat", "answer", chunks) == [("To", False), (" get", False), (" there", False), ("!", True)]


def test_chat_spaces_between_words_stay_and_surrounding_whitespace_goes() -> None:
    chunks = ["[[ ## answer ## ]]\n", "How ", "are ", "you ", "doing?", "\n\n[[ ## completed ## ]]"]
    pieces = scan("chat", "answer", chunks)
    assert "".join(text for text, _ in pieces) == "How are you doing?"
    assert pieces[-1][1] is True


def test_chat_whole_sentences_in_one_chunk_end_with_an_empty_last_chunk() -> None:
    chunks = ["[[ ##", " answer ## ]]", "To get to the other side.", "\n\n[[ ## completed ## ]]"]
    assert scan("chat", "answer", chunks) == [("To get to the other side.", False), ("", True)]


def test_chat_field_before_the_listened_one_is_skipped_and_the_next_header_ends_it() -> None:
    chunks = [
        "[[ ## reasoning ## ]]\nThink",
        " hard.",
        "\n\n[[ ## answer ## ]]\n",
        "42",
        "\n\n[[ ## completed ## ]]",
    ]
    assert scan("chat", "answer", chunks) == [("42", False), ("", True)]
    assert scan("chat", "reasoning", chunks) == [("Think", False), (" hard.", False), ("", True)]


def test_chat_text_that_could_still_be_a_marker_is_held_for_at_most_a_few_chunks() -> None:
    held = scan("chat", "answer", ["[[ ## answer ## ]]", "a", " [[ ## ", *["x"] * (MAX_HELD - 1)])
    assert held == [("a", False)]
    released = scan("chat", "answer", ["[[ ## answer ## ]]", "a", " [[ ## ", *["x"] * MAX_HELD])
    assert released == [("a", False), (" [[ ##", False)]


def test_chat_a_bracket_is_held_only_until_it_cannot_start_a_marker() -> None:
    assert scan("chat", "answer", ["[[ ## answer ## ]]", "a [", "x"]) == [("a [x", False)]


def test_chat_answer_without_the_completed_marker_is_flushed_at_the_end() -> None:
    chunks = ["[[ ## answer ## ]]\n\n", "This", " is", " it", "."]
    pieces = scan("chat", "answer", chunks, finish=True)
    assert "".join(text for text, _ in pieces) == "This is it."
    assert pieces[-1][1] is True


def test_chat_answer_cut_inside_a_marker_keeps_only_the_value() -> None:
    pieces = scan("chat", "answer", ["[[ ## answer ## ]]\nyes\n\n[[ ## comp"], finish=True)
    assert pieces == [("yes", True)]


def test_chat_listener_of_an_absent_field_emits_nothing() -> None:
    assert scan("chat", "answer", ["[[ ## other ## ]]\nx\n\n[[ ## completed ## ]]"], finish=True) == []


def test_xml_field_between_its_tags() -> None:
    chunks = ["<", "answer", ">", "To", " get", "!", "<", "/answer", ">"]
    pieces = scan("xml", "answer", chunks)
    assert "".join(text for text, _ in pieces) == "To get!"
    assert pieces[-1][1] is True


def test_xml_a_less_than_sign_in_the_value_is_text() -> None:
    pieces = scan("xml", "answer", ["<answer>", "a < b", " holds", "</answer>"])
    assert "".join(text for text, _ in pieces) == "a < b holds"


def test_json_string_value_streams_with_its_quotes_and_ends_at_the_closing_quote() -> None:
    chunks = ['{"', "answer", '":', '"To', " get", ' there!"', "}\n"]
    assert scan("json", "answer", chunks) == [('"To', False), (" get", False), (' there!"', True)]


def test_json_second_key_is_found_after_the_first() -> None:
    chunks = ['{"reasoning": "', "Step one. ", 'Done. "', ',"answer": "', 'Yes!"', "\n}"]
    assert scan("json", "reasoning", chunks) == [('"', False), ("Step one. ", False), ('Done. "', True)]
    assert scan("json", "answer", chunks) == [('"', False), ('Yes!"', True)]


def test_json_escaped_quotes_and_braces_inside_strings_do_not_end_the_value() -> None:
    chunks = ['{"answer": "say \\"hi\\" {', ' ok}"', ', "x": 1}']
    pieces = scan("json", "answer", chunks)
    assert "".join(text for text, _ in pieces) == '"say \\"hi\\" { ok}"'
    assert pieces[-1][1] is True


def test_json_nested_object_value_ends_when_its_braces_balance() -> None:
    chunks = [
        '{"response": {',
        '"items": ["a", "b"], ',
        '"settings": {"answer": "v"}, ',
        '"active": true}',
        "}",
    ]
    pieces = scan("json", "response", chunks)
    text = "".join(piece for piece, _ in pieces)
    assert text == '{"items": ["a", "b"], "settings": {"answer": "v"}, "active": true}'
    assert pieces[-1][1] is True
    assert scan("json", "answer", chunks) == []  # a nested key of the same name is not the field


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [(['{"n": 4', "2}"], [("4", False), ("2", True)]), (['{"n": 42', "}"], [("42", False), ("", True)])],
)
def test_json_number_ends_at_the_next_delimiter(chunks: list[str], expected: list[tuple[str, bool]]) -> None:
    assert scan("json", "n", chunks) == expected


def test_json_value_cut_off_by_the_end_of_the_answer_ends_at_finish() -> None:
    assert scan("json", "answer", ['{"answer": "unfinished'], finish=True) == [
        ('"unfinished', False),
        ("", True),
    ]


@pytest.mark.parametrize(
    ("text", "partial"),
    [
        ("some text [", True),
        ("some text [[", True),
        ("some text [[ #", True),
        ("some text [[ ## com", True),
        ("x [[ ## completed ## ", True),
        ("hello world", False),
        ("answer: hello", False),
        ("[x", False),
        ("[[ ## a b", False),
    ],
)
def test_partial_chat_markers(text: str, partial: bool) -> None:
    assert (partial_chat_marker(text) is not None) is partial

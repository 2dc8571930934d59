"""The tests' HTML parser: text after a void element still belongs to the enclosing element."""

from html_elements import Elements


def test_text_after_void_elements_keeps_its_class():
    html = (
        '<head><meta charset="utf-8"><link rel="x"></head>'
        '<div class="pane">before<br>after <img src="a.png" alt="x"> and <input value="v">'
        ' end<br/>tail</div><p class="next">next</p>'
    )
    elements = Elements(html)
    assert "".join(elements.text_by_class["pane"]) == "beforeafter  and  endtail"
    assert elements.text_by_class["next"] == ["next"]
    assert [tag for tag, _ in elements.tags] == [
        "head", "meta", "link", "div", "br", "img", "input", "br", "p",
    ]  # fmt: skip

"""What a crawled page offers: title, robots directives, links and images (crawl/extract.py)."""

from __future__ import annotations

import pytest

from facesearch.crawl.extract import (
    ImageRef,
    Page,
    normalise_url,
    parse_page,
    robots_directives,
)

URL = "https://photos.example/people/page.html"


def images(html: str, url: str = URL) -> list[str]:
    return [image.url for image in parse_page(html, url).images]


# ------------------------------------------------------------------------------ normalise_url


@pytest.mark.parametrize(("url", "expected"), [
    ("HTTP://Photos.EXAMPLE/A.jpg", "http://photos.example/A.jpg"),
    ("http://photos.example", "http://photos.example/"),
    ("http://photos.example:80/a.jpg", "http://photos.example/a.jpg"),
    ("https://photos.example:443/a.jpg", "https://photos.example/a.jpg"),
    ("http://photos.example:443/a.jpg", "http://photos.example:443/a.jpg"),
    ("https://photos.example:80/a.jpg", "https://photos.example:80/a.jpg"),
    ("http://photos.example:8080", "http://photos.example:8080/"),
    ("http://photos.example/a.jpg#face", "http://photos.example/a.jpg"),
    ("http://photos.example/a.jpg?b=2&a=1#x", "http://photos.example/a.jpg?b=2&a=1"),
    ("  http://photos.example/a.jpg \n", "http://photos.example/a.jpg"),
    ("http://user:secret@photos.example/a.jpg", "http://photos.example/a.jpg"),
    ("http://[2001:DB8::1]/a.jpg", "http://[2001:db8::1]/a.jpg"),
    ("http://[::1]:8080/a.jpg", "http://[::1]:8080/a.jpg"),
    ("http://[::1]:80/a.jpg", "http://[::1]/a.jpg"),
    ("https://[::1]:443/a.jpg", "https://[::1]/a.jpg"),
])
def test_normalise_url_lowers_scheme_and_host_and_drops_default_ports_and_fragments(
        url: str, expected: str) -> None:
    assert normalise_url(url) == expected


@pytest.mark.parametrize(("url", "expected"), [
    ("http://[::1]:443/a.jpg", "http://[::1]:443/a.jpg"),
    ("https://[::1]:80/a.jpg", "https://[::1]:80/a.jpg"),
    ("https://[2001:db8::1]:80/", "https://[2001:db8::1]:80/"),
])
def test_normalise_url_keeps_a_non_default_port_of_an_ipv6_host(url: str, expected: str) -> None:
    assert normalise_url(url) == expected


@pytest.mark.parametrize(("url", "expected"), [
    ("b.jpg", "https://photos.example/people/b.jpg"),
    ("./b.jpg", "https://photos.example/people/b.jpg"),
    ("../img/b.jpg", "https://photos.example/img/b.jpg"),
    ("/img/b.jpg", "https://photos.example/img/b.jpg"),
    ("//cdn.example/b.jpg", "https://cdn.example/b.jpg"),
    ("?page=2", "https://photos.example/people/page.html?page=2"),
    ("#top", "https://photos.example/people/page.html"),
    ("", "https://photos.example/people/page.html"),
])
def test_normalise_url_resolves_relative_urls_against_the_base(url: str, expected: str) -> None:
    assert normalise_url(url, URL) == expected


@pytest.mark.parametrize("url", [
    "mailto:someone@photos.example", "javascript:void(0)", "data:image/jpeg;base64,/9j/4AAQ",
    "ftp://photos.example/a.jpg", "file:///etc/passwd", "tel:+15555550100", "about:blank",
    "http://", "http:///a.jpg", "http://photos.example:99999/", "http://photos.example:x/",
    "http://[::1/a.jpg", "relative/without/base.jpg"])
def test_normalise_url_refuses_anything_but_absolute_http_urls(url: str) -> None:
    assert normalise_url(url) is None


def test_normalise_url_is_idempotent() -> None:
    for url in ("HTTP://A.example:80", "https://a.example/x?y=1#z", "http://[::1]:8080/q"):
        once = normalise_url(url)
        assert once is not None
        assert normalise_url(once) == once


# ------------------------------------------------------------------------- robots_directives


def test_robots_directives_are_split_on_commas_and_lower_cased() -> None:
    assert robots_directives("NoIndex, NOFOLLOW ,noimageindex,,") == {
        "noindex", "nofollow", "noimageindex"}
    assert robots_directives("") == set()


def test_a_directive_scoped_to_any_user_agent_applies() -> None:
    assert robots_directives("otherbot: noindex, nofollow") == {"noindex", "nofollow"}
    assert robots_directives("googlebot: noimageindex") == {"noimageindex"}


def test_a_max_image_preview_of_none_is_not_the_none_directive() -> None:
    found = robots_directives("max-image-preview:none, max-snippet:-1")
    assert "none" not in found
    page = parse_page('<meta name="robots" content="max-image-preview:none">'
                      '<a href="/next.html">next</a>', URL)
    assert page.follow


# ------------------------------------------------------------------------------- parse_page


def test_the_title_is_read_decoded_with_its_white_space_collapsed() -> None:
    page = parse_page("<html><head><title>\n  Ana &amp; Bo\n\t at the  beach </title></head>"
                      "<body><h1>Other</h1></body></html>", URL)
    assert page.title == "Ana & Bo at the beach"


def test_the_title_is_capped_at_500_characters() -> None:
    assert len(parse_page(f"<title>{'x' * 2000}</title>", URL).title) == 500


def test_an_inline_svg_title_is_not_the_page_title() -> None:
    page = parse_page("<title>Team photos</title><body>"
                      "<svg><title>Close</title><path d='M0 0'/></svg></body>", URL)
    assert page.title == "Team photos"


def test_img_src_is_collected_with_its_alt_text() -> None:
    page = parse_page('<img src="/img/ana.jpg" alt="  Ana Lopez, 2019 ">', URL)
    assert page.images == [ImageRef("https://photos.example/img/ana.jpg", "Ana Lopez, 2019")]


def test_alt_text_is_capped_at_500_characters() -> None:
    page = parse_page(f'<img src="a.jpg" alt="{"y" * 900}">', URL)
    assert page.images[0].alt == "y" * 500


def test_every_srcset_candidate_is_collected() -> None:
    html = ('<img src="small.jpg" srcset="small.jpg 320w, medium.jpg 640w,large.jpg 1280w" '
            'alt="Ana">'
            '<img srcset="x1.jpg 1x,  x2.jpg 2x" alt="Bo">')
    page = parse_page(html, URL)
    base = "https://photos.example/people/"
    assert page.images == [ImageRef(base + "small.jpg", "Ana"), ImageRef(base + "medium.jpg", "Ana"),
                           ImageRef(base + "large.jpg", "Ana"), ImageRef(base + "x1.jpg", "Bo"),
                           ImageRef(base + "x2.jpg", "Bo")]


def test_an_img_with_only_srcset_does_not_collect_the_page_itself() -> None:
    assert URL not in images('<img srcset="a.jpg 1x" alt="a"><img src="" alt="empty">'
                             '<img src="   "><meta property="og:image" content="">')
    assert images('<img srcset="a.jpg 1x">') == ["https://photos.example/people/a.jpg"]


def test_a_srcset_url_containing_commas_is_kept_whole() -> None:
    cdn = "https://res.cloudinary.example/image/upload/w_300,h_200,c_fill/face.jpg"
    assert images(f'<img srcset="{cdn} 1x, /b.jpg 2x">') == [
        cdn, "https://photos.example/b.jpg"]


def test_picture_sources_are_collected() -> None:
    html = ('<picture><source media="(min-width: 800px)" srcset="/wide.jpg 1x, /wide2.jpg 2x">'
            '<source srcset="/narrow.jpg"><img src="/fallback.jpg" alt="Ana"></picture>')
    assert images(html) == ["https://photos.example/wide.jpg", "https://photos.example/wide2.jpg",
                            "https://photos.example/narrow.jpg",
                            "https://photos.example/fallback.jpg"]
    # The <img>'s alt text describes every source of its picture, and nothing after it.
    page = parse_page(html + '<img src="/after.jpg">', "https://photos.example/")
    assert [i.alt for i in page.images] == ["Ana"] * 4 + [""]


@pytest.mark.parametrize("meta", [
    '<meta property="og:image" content="/og.jpg">',
    '<meta property="OG:IMAGE" content="/og.jpg">',
    '<meta property="og:image:url" content="/og.jpg">',
    '<meta property="og:image:secure_url" content="/og.jpg">',
    '<meta name="og:image" content="/og.jpg">',
])
def test_an_open_graph_image_is_collected(meta: str) -> None:
    assert images(f"<head>{meta}</head>") == ["https://photos.example/og.jpg"]


def test_other_open_graph_properties_are_not_images() -> None:
    assert images('<meta property="og:image:width" content="1200">'
                  '<meta property="og:url" content="/page.html">') == []


def test_a_link_rel_image_src_is_collected_but_other_links_are_not() -> None:
    html = ('<link rel="image_src" href="/thumb.jpg"><link rel="icon" href="/favicon.ico">'
            '<link rel="stylesheet" href="/site.css"><link rel="preload IMAGE_SRC" href="/p.jpg">')
    assert images(html) == ["https://photos.example/thumb.jpg", "https://photos.example/p.jpg"]


def test_a_base_href_changes_how_later_urls_resolve() -> None:
    html = ('<head><base href="https://cdn.example/assets/"></head>'
            '<img src="a.jpg"><img src="/root.jpg"><a href="next.html">next</a>')
    page = parse_page(html, URL)
    assert [i.url for i in page.images] == ["https://cdn.example/assets/a.jpg",
                                            "https://cdn.example/root.jpg"]
    assert page.links == ["https://cdn.example/assets/next.html"]


def test_a_relative_base_href_is_resolved_against_the_page() -> None:
    assert images('<base href="../gallery/"><img src="a.jpg">') == [
        "https://photos.example/gallery/a.jpg"]


def test_non_http_image_and_link_urls_are_dropped() -> None:
    html = ('<img src="data:image/png;base64,iVBORw0KGgo="><img src="javascript:alert(1)">'
            '<img src="ftp://photos.example/a.jpg"><img src="file:///etc/passwd">'
            '<a href="mailto:me@photos.example">mail</a><a href="javascript:void(0)">js</a>'
            '<a href="tel:+15555550100">call</a><img src="/ok.jpg"><a href="/ok.html">ok</a>')
    page = parse_page(html, URL)
    assert [i.url for i in page.images] == ["https://photos.example/ok.jpg"]
    assert page.links == ["https://photos.example/ok.html"]


def test_links_are_absolute_without_fragments_and_deduplicated_in_page_order() -> None:
    html = ('<a href="b.html#one">b</a><a href="/c.html">c</a><a href="B.HTML">upper</a>'
            '<a href="./b.html#two">b again</a><a href="http://PHOTOS.example:80/c.html">c</a>'
            '<a name="anchor-without-href">x</a><a href="">empty</a>')
    assert parse_page(html, "http://photos.example/people/").links == [
        "http://photos.example/people/b.html", "http://photos.example/c.html",
        "http://photos.example/people/B.HTML"]


def test_links_with_rel_nofollow_are_not_followed() -> None:
    html = ('<a href="/a.html" rel="nofollow">a</a><a href="/b.html" rel="ugc NoFollow">b</a>'
            '<a href="/c.html" rel="noopener">c</a>')
    assert parse_page(html, URL).links == ["https://photos.example/c.html"]


def test_images_are_deduplicated_keeping_the_first_occurrence() -> None:
    html = ('<meta property="og:image" content="/a.jpg"><img src="/a.jpg" alt="A">'
            '<img src="a.jpg#x"><img src="https://PHOTOS.example:443/a.jpg">'
            '<img srcset="/a.jpg 1x, /b.jpg 2x">')
    page = parse_page(html, URL)
    assert [i.url for i in page.images] == ["https://photos.example/a.jpg",
                                            "https://photos.example/people/a.jpg",
                                            "https://photos.example/b.jpg"]


@pytest.mark.parametrize(("content", "allowed", "follow"), [
    ("", True, True),
    ("index, follow", True, True),
    ("noindex", False, True),
    ("noimageindex", False, True),
    ("NOAI", False, True),
    ("nofollow", True, False),
    ("none", False, False),
    ("noarchive, nosnippet", True, True),
])
def test_robots_meta_directives_decide_images_and_following(content: str, allowed: bool,
                                                            follow: bool) -> None:
    page = parse_page(f'<meta name="robots" content="{content}"><img src="/a.jpg">'
                      '<a href="/b.html">b</a>', URL)
    assert page.images_allowed is allowed
    assert page.follow is follow
    assert page.images == [ImageRef("https://photos.example/a.jpg")]  # listed; caller decides
    assert page.links == ["https://photos.example/b.html"]


def test_robots_directives_of_several_meta_tags_accumulate() -> None:
    page = parse_page('<META NAME="ROBOTS" CONTENT="NoFollow">'
                      '<meta name="facesearch" content="noimageindex">'
                      '<meta name="description" content="noindex">', URL)
    assert page.directives == {"nofollow", "noimageindex"}


def test_noimageai_stops_image_collection_like_noai() -> None:
    page = parse_page('<meta name="robots" content="noimageai"><img src="/a.jpg">', URL)
    assert not page.images_allowed


def test_a_page_without_markup_is_empty() -> None:
    assert parse_page("", URL) == Page()
    assert parse_page("just text, no tags", URL) == Page()


def test_broken_html_still_yields_what_can_be_read() -> None:
    html = ("<html><head><title>Broken <b>page</title>\n"
            "<body><div><p>unclosed <b>bold <i>italic <table><tr><td>cell\n"
            "\ufffd\x00\x81 garbage << <<< >>>> </never-opened> &bogus; &#xZZ; &#99999999999;\n"
            "<p><img src=/a.jpg alt='Ana'><span><img src=\"/b.jpg\" alt=Bo>\n"
            "</> <? processing ?> <![if !IE]> <![endif]-->" + "<div>" * 3000 + "\n"
            "<a href='/next.html'>next</a><td><li><li><form><select><option>unclosed\n"
            "<img src='/c.jpg'></div></div></body></html></html> <<>> &&&& ;")
    page = parse_page(html, "http://photos.example/")
    assert page.title == "Broken page"
    assert [i.url for i in page.images] == ["http://photos.example/a.jpg",
                                            "http://photos.example/b.jpg",
                                            "http://photos.example/c.jpg"]
    assert page.images[0].alt == "Ana"
    assert page.links == ["http://photos.example/next.html"]


@pytest.mark.parametrize("garbage", ["<!", "<![CDATA[", "<!--", "</", "<a href='x", "<!DOCTYPE",
                                     "<", "\x00" * 10, "<img src=", "&#", "<![ ]]>"])
def test_garbage_at_the_end_never_raises_and_keeps_earlier_images(garbage: str) -> None:
    page = parse_page('<title>T</title><img src="/kept.jpg">' + garbage, URL)
    assert page.title == "T"
    assert page.images[0].url == "https://photos.example/kept.jpg"

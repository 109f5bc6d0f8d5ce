"""The case report as a PDF (fpdf2): the same content as the printable page, with the case
number and "page N of M" on every page, so that a loose page still says where it belongs."""

from __future__ import annotations

import io
import re
from collections.abc import Callable

from fpdf import FPDF

from facesearch.errors import FacesearchError
from facesearch.service import CaseReport, readable_place
from facesearch.web.dates import readable

CROP_MM = 18  # a candidate's crop, and a probe face's, printed at the same size for comparison


def _text(value: object) -> str:
    # The PDF core fonts are Latin-1; other characters print as "?" rather than fail.
    return str(value).encode("latin-1", "replace").decode("latin-1")


def report_filename(report: CaseReport) -> str:
    """case-<number>.pdf, the number reduced to characters safe in any file system and in a
    Content-Disposition header (the case id where nothing of it is left)."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", report.case.number).strip("-")
    return f"case-{safe or report.case.id}.pdf"


class _ReportPDF(FPDF):
    def __init__(self, case_number: str) -> None:
        super().__init__(format="A4")
        self.case_number = case_number

    def header(self) -> None:
        if self.page_no() > 1:
            self.set_font("Helvetica", "I", 8)
            self.cell(0, 5, _text(f"Case {self.case_number}: report (continued)"),
                      new_x="LMARGIN", new_y="NEXT")
            self.ln(2)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("Helvetica", size=8)
        # {nb} is fpdf2's alias for the page count, filled in when the document is output.
        self.cell(0, 5, _text(f"Case {self.case_number} \u00b7 page {self.page_no()} of {{nb}}"),
                  align="C")


def report_pdf(report: CaseReport, crop_of: Callable[[int], bytes]) -> bytes:
    """crop_of(face_id) gives a candidate's crop, or raises if the face has been erased."""
    case = report.case
    pdf = _ReportPDF(case.number)
    pdf.set_auto_page_break(True, margin=18)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 10, _text(f"Case {case.number}: report"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    closed = (f"closed {readable(case.closed_at)} by {case.closed_by or '-'}"
              if case.status == "closed" else "open")
    for line in (f"Organisation: {report.organisation}",
                 f"Offence or incident type: {case.offence_type or '-'}",
                 f"Purpose: {case.purpose}", f"Authorisation: {case.authorisation or '-'}",
                 f"Opened {readable(case.opened_at)}; {closed}",
                 f"Report generated {readable(report.generated_at)}"):
        pdf.cell(0, 6, _text(line), new_x="LMARGIN", new_y="NEXT")
    counts = report.counts
    pdf.set_font("Helvetica", "B", 10)
    pdf.cell(0, 7, _text(
        f"{counts['searches']} searches, {counts['candidates']} candidates: {counts['possible']} "
        f"possible, {counts['confirmed']} confirmed, {counts['rejected']} rejected (latest live "
        f"mark); {counts['erased']} erased"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "I", 9)
    pdf.multi_cell(0, 5, _text(f"{report.notice} Score: {report.score_meaning}"),
                   new_x="LMARGIN", new_y="NEXT")
    for search in report.searches:
        _search(pdf, report, search, crop_of)
    return bytes(pdf.output())


def _search(pdf: _ReportPDF, report: CaseReport, search, crop_of) -> None:  # noqa: ANN001
    pdf.ln(3)
    if pdf.get_y() > 240:
        pdf.add_page()
    pdf.set_font("Helvetica", "B", 12)
    pdf.cell(0, 8, _text(f"Search {search.id} by {search.actor}, {readable(search.at)}"),
             new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=8)
    pdf.cell(0, 5, _text(f"probe sha256 {search.probe_sha256}"), new_x="LMARGIN", new_y="NEXT")
    top, x = pdf.get_y(), 10
    for face in range(len(search.probe_faces)):
        crop = report.probe_crops.get((search.id, face))
        if crop is None:
            continue
        pdf.image(io.BytesIO(crop), x=x, y=top, w=CROP_MM, h=CROP_MM)
        pdf.set_xy(x, top + CROP_MM)
        pdf.cell(CROP_MM, 4, _text(f"probe face {face + 1}"))  # numbered as the picker does
        x += CROP_MM + 6
    if x > 10:
        pdf.set_xy(10, top + CROP_MM + 5)
    else:
        pdf.cell(0, 5, "The probe crop is no longer kept: it is kept for the probe retention "
                 "period only.", new_x="LMARGIN", new_y="NEXT")
    if not search.candidates:
        pdf.cell(0, 6, "No candidates within the match threshold.", new_x="LMARGIN", new_y="NEXT")
    for c in search.candidates:
        if pdf.get_y() > 250:
            pdf.add_page()
        _candidate(pdf, report, c, crop_of)
    for photo in report.photos.get(search.id, []):
        pdf.set_font("Helvetica", "B", 8)
        ranks = ", ".join(f"#{rank}" for _, rank in photo.candidates)
        places = len(photo.sightings)
        pdf.cell(0, 5, _text(f"Photo of {ranks}, seen at {places} place{'s' if places != 1 else ''}:"),
                 new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=8)
        for seen in photo.sightings:
            pdf.set_x(14)
            pdf.cell(0, 4, _text(f"{seen.page_url or readable_place(seen.location)} ({seen.source}, "
                                 f"{readable(seen.seen_at, False)})")[:120],
                     new_x="LMARGIN", new_y="NEXT")


def _candidate(pdf: _ReportPDF, report: CaseReport, c, crop_of) -> None:  # noqa: ANN001
    top = pdf.get_y()
    if c.erased_at:
        pdf.set_font("Helvetica", "I", 9)
        pdf.cell(0, 5, _text(f"#{c.rank}: erased on {readable(c.erased_at, False)}; the face is "
                             f"gone, its review stays - {c.status}"), new_x="LMARGIN", new_y="NEXT")
        _marks(pdf, c, 14)
        return
    try:
        pdf.image(io.BytesIO(crop_of(c.face_id)), x=10, y=top, w=CROP_MM, h=CROP_MM)
    except FacesearchError:
        pdf.rect(10, top, CROP_MM, CROP_MM)  # the face has been erased since
    pdf.set_xy(31, top)
    pdf.set_font("Helvetica", "B", 9)
    pdf.cell(0, 5, _text(f"#{c.rank} (probe face {c.probe_face + 1}) - {c.status} - "
                         f"distance {c.distance:.3f}, score {c.false_match_probability:.2e}"),
             new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=8)
    where = report.provenance[c.id]
    found = f"on {where.page_url}; image {where.place}" if where.page_url else where.place
    for line in (found, f"source {where.source}, jurisdiction {c.jurisdiction}, "
                 f"collected {readable(c.collected_at, False)}, face {c.face_id}"):
        pdf.set_x(31)
        pdf.cell(0, 4, _text(line)[:120], new_x="LMARGIN", new_y="NEXT")
    if c.case_mark:
        m = c.case_mark.mark
        pdf.set_x(31)
        pdf.cell(0, 4, _text(f"{m.mark} in search {c.case_mark.search_id} by {m.actor}, "
                             f"{readable(m.at)}"), new_x="LMARGIN", new_y="NEXT")
    _marks(pdf, c, 31)
    pdf.set_y(max(pdf.get_y(), top + CROP_MM + 2))


def _marks(pdf: _ReportPDF, c, x: float) -> None:  # noqa: ANN001 - a StoredCandidate
    """The review trail: every mark with its note; a withdrawn one struck through and said so."""
    for m in c.marks:
        pdf.set_x(x)
        pdf.set_font("Helvetica", "S" if m.withdrawn_at else "", 8)
        line = f"marked {m.mark} by {m.actor}, {readable(m.at)}"
        if m.withdrawn_at:
            line += f" (withdrawn by {m.withdrawn_by}, {readable(m.withdrawn_at)})"
        if m.note:
            line += f": {m.note}"
        elif c.erased_at:
            line += " (any note removed with the face)"
        pdf.multi_cell(0, 4, _text(line),
                       new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=8)

"""The case report as a PDF (fpdf2): the same content as the printable page."""

from __future__ import annotations

import io
from collections.abc import Callable

from fpdf import FPDF

from facesearch.errors import FacesearchError
from facesearch.service import CaseReport


def _text(value: object) -> str:
    # The PDF core fonts are Latin-1; other characters print as "?" rather than fail.
    return str(value).encode("latin-1", "replace").decode("latin-1")


def report_pdf(report: CaseReport, crop_of: Callable[[int], bytes]) -> bytes:
    """crop_of(face_id) gives a candidate's crop, or raises if the face has been erased."""
    case = report.case
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 10, _text(f"Case {case.number}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    for line in (f"Organisation: {report.organisation}", f"Purpose: {case.purpose}",
                 f"Authorisation: {case.authorisation or '-'}",
                 f"Opened {case.opened_at}; status {case.status}",
                 f"Report generated {report.generated_at}"):
        pdf.cell(0, 6, _text(line), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "I", 9)
    pdf.multi_cell(0, 5, _text(f"{report.notice} Score: {report.score_meaning}"),
                   new_x="LMARGIN", new_y="NEXT")
    for search in report.searches:
        pdf.ln(3)
        pdf.set_font("Helvetica", "B", 12)
        pdf.cell(0, 8, _text(f"Search {search.id} by {search.actor}, {search.at}"),
                 new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=8)
        pdf.cell(0, 5, _text(f"probe sha256 {search.probe_sha256}"), new_x="LMARGIN", new_y="NEXT")
        if not search.candidates:
            pdf.cell(0, 6, "No candidates within the match threshold.", new_x="LMARGIN", new_y="NEXT")
        for c in search.candidates:
            if pdf.get_y() > 260:
                pdf.add_page()
            if c.erased_at:
                pdf.set_font("Helvetica", "I", 9)
                pdf.cell(0, 6, _text(f"#{c.rank}: erased on {c.erased_at[:10]}"),
                         new_x="LMARGIN", new_y="NEXT")
                continue
            top = pdf.get_y()
            try:
                pdf.image(io.BytesIO(crop_of(c.face_id)), x=10, y=top, w=18, h=18)
            except FacesearchError:
                pdf.rect(10, top, 18, 18)  # the face has been erased since
            pdf.set_xy(31, top)
            pdf.set_font("Helvetica", "B", 9)
            pdf.cell(0, 5, _text(f"#{c.rank} (probe face {c.probe_face}) - {c.status} - "
                                 f"distance {c.distance:.3f}, score {c.false_match_probability:.2e}"),
                     new_x="LMARGIN", new_y="NEXT")
            pdf.set_font("Helvetica", size=8)
            for line in (f"{c.location}", f"source {c.source}, jurisdiction {c.jurisdiction}, "
                         f"collected {c.collected_at}, face {c.face_id}"):
                pdf.set_x(31)
                pdf.cell(0, 4, _text(line)[:120], new_x="LMARGIN", new_y="NEXT")
            for m in c.marks:
                pdf.set_x(31)
                pdf.cell(0, 4, _text(f"marked {m.mark} by {m.actor} at {m.at}"),
                         new_x="LMARGIN", new_y="NEXT")
            pdf.set_y(max(pdf.get_y(), top + 20))
        for photo in report.photos.get(search.id, []):
            pdf.set_font("Helvetica", "B", 8)
            ranks = ", ".join(f"#{rank}" for _, rank in photo.candidates)
            pdf.cell(0, 5, _text(f"Photo of {ranks}, seen at {len(photo.sightings)} places:"),
                     new_x="LMARGIN", new_y="NEXT")
            pdf.set_font("Helvetica", size=8)
            for seen in photo.sightings:
                pdf.set_x(14)
                pdf.cell(0, 4, _text(f"{seen.page_url or seen.location} ({seen.source}, "
                                     f"{seen.seen_at[:10]})")[:120], new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())

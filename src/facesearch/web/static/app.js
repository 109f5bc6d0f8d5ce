// The search page: pick a probe (drop or file picker), show its faces boxed, choose one,
// search, then open the stored result; or pick several photos of one person, searched as one
// (each photo's only face, or its largest if asked). The print button of the report page.
"use strict";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

async function postForm(url, form) {
  const response = await fetch(url, { method: "POST", body: form, credentials: "same-origin",
                                      headers: { "X-CSRF-Token": csrfToken() } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = (body.error && body.error.message) || "the request failed";
    throw new Error(response.status === 429 ? message + " (rate limit)" : message);
  }
  return body;
}

function setUpSearch(panel) {
  const caseId = panel.dataset.case;
  const input = panel.querySelector("#probe");
  const drop = panel.querySelector("#drop");
  const view = panel.querySelector("#probe-view");
  const image = panel.querySelector("#probe-image");
  const choice = panel.querySelector("#face-choice");
  const button = panel.querySelector("#search-button");
  const status = panel.querySelector("#search-status");
  const several = panel.querySelector("#several");
  const useLargest = panel.querySelector("#use-largest");
  let probe = null;
  let photos = [];  // a multi-photo search's files
  let chosen = 0;
  // The picker's errors, right under it, announced as they appear.
  const problem = document.createElement("p");
  problem.id = "probe-error";
  problem.className = "form-error";
  problem.setAttribute("role", "alert");
  problem.hidden = true;
  drop.after(problem);

  function fail(message) {
    problem.textContent = /[.!?]$/.test(message) ? message : `${message}.`;
    problem.hidden = false;
    status.textContent = problem.textContent;
  }

  function clearFailure() {
    problem.hidden = true;
    problem.textContent = "";
  }

  function choose(number) {
    chosen = number;
    panel.querySelectorAll(".face-box").forEach((box) =>
      box.classList.toggle("chosen", Number(box.dataset.face) === number));
    const radio = choice.querySelector(`input[value="${number}"]`);
    if (radio) radio.checked = true;
  }

  function drawFaces(faces) {
    panel.querySelectorAll(".face-box").forEach((box) => box.remove());
    choice.querySelectorAll("label").forEach((label) => label.remove());
    const scale = image.clientWidth / image.naturalWidth;
    faces.forEach((face) => {
      const box = document.createElement("button");
      box.type = "button";
      box.className = "face-box";
      box.dataset.face = face.number;
      box.setAttribute("aria-label", `Face ${face.number + 1}`);
      // Numbered as the list below names them.
      const number = document.createElement("span");
      number.className = "face-number";
      number.textContent = String(face.number + 1);
      box.appendChild(number);
      box.style.left = `${face.box.left * scale}px`;
      box.style.top = `${face.box.top * scale}px`;
      box.style.width = `${(face.box.right - face.box.left) * scale}px`;
      box.style.height = `${(face.box.bottom - face.box.top) * scale}px`;
      box.addEventListener("click", () => choose(face.number));
      image.parentElement.appendChild(box);
      const label = document.createElement("label");
      label.className = "check";
      label.innerHTML = `<input type="radio" name="face" value="${face.number}"> Face ${face.number + 1}` +
        (face.number === 0 ? " (largest)" : "");
      label.querySelector("input").addEventListener("change", () => choose(face.number));
      if (face.quality_warnings.length) {  // a poor probe face: say which measure, plainly
        const warning = document.createElement("span");
        warning.className = "quality-warning";
        warning.textContent = ` (poor probe: ${face.quality_warnings.join("; ")})`;
        label.appendChild(warning);
      }
      choice.appendChild(label);
    });
    choose(0);
  }

  function loadSeveral(files) {
    probe = null;
    photos = files;
    clearFailure();
    view.hidden = true;
    several.hidden = false;
    status.textContent = `${files.length} photos of one person, searched together as one probe.`;
    button.disabled = false;
  }

  function pick(files) {
    if (files.length > 1) loadSeveral(Array.from(files));
    else if (files[0]) load(files[0]);
  }

  async function load(file) {
    probe = file;
    photos = [];
    clearFailure();
    several.hidden = true;
    button.disabled = true;
    panel.querySelectorAll(".face-box").forEach((box) => box.remove());
    status.textContent = "Finding faces…";
    image.src = URL.createObjectURL(file);
    const shown = await image.decode().then(() => true, () => false);
    if (!shown) {
      view.hidden = true;
      fail("This file is not a photo this browser can show; choose a JPEG, PNG or WebP photo");
      return;
    }
    view.hidden = false;
    const form = new FormData();
    form.append("probe", file);
    try {
      const faces = await postForm("/api/v1/probe-faces", form);
      choice.hidden = !faces.length;
      if (!faces.length) {
        fail("No face found in this photo; try another.");
        return;
      }
      drawFaces(faces);
      status.textContent = `${faces.length} face(s) found. Choose one and search.`;
      button.disabled = false;
    } catch (error) {
      choice.hidden = true;
      fail(error.message);
    }
  }

  input.addEventListener("change", () => pick(input.files));
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    pick(event.dataTransfer.files);
  });
  drop.addEventListener("keydown", (event) => { if (event.key === "Enter") input.click(); });

  button.addEventListener("click", async () => {
    if (!probe && !photos.length) return;
    button.disabled = true;
    clearFailure();
    status.textContent = "Searching…";
    const form = new FormData();
    if (photos.length) {
      photos.forEach((photo) => form.append("probe", photo));
      form.append("face", useLargest.checked ? "largest" : "all");
    } else {
      form.append("probe", probe);
      form.append("face", String(chosen));
    }
    form.append("top", panel.querySelector("#top").value || "10");
    try {
      const result = await postForm(`/api/v1/cases/${caseId}/searches`, form);
      window.location.href = `/cases/${caseId}/searches/${result.search_id}`;
    } catch (error) {
      fail(error.message);
      button.disabled = false;
    }
  });
}

// Times are sent in UTC (web/dates.py); show each in the reader's own time zone.
function localTimes() {
  document.querySelectorAll("time[datetime]").forEach((element) => {
    const value = element.getAttribute("datetime");
    const moment = new Date(value);
    // A bare date has no zone to convert from.
    if (Number.isNaN(moment.getTime()) || !value.includes("T")) return;
    const options = element.dataset.show === "date" ? { dateStyle: "medium" }
      // dateStyle and timeStyle refuse timeZoneName (a TypeError), so the parts are named.
      : { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
          timeZoneName: "short" };
    element.title = element.textContent;
    element.textContent = new Intl.DateTimeFormat(undefined, options).format(moment);
  });
}

// Compare page: a source image its source no longer serves gives way to the words saying so.
function sourceImageFallback(image) {
  const gone = () => {
    document.getElementById("source-frame").hidden = true;
    document.getElementById("source-gone").hidden = false;
  };
  if (image.complete && image.naturalWidth === 0) gone();  // failed before this ran
  else image.addEventListener("error", gone);
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes();
  const panel = document.getElementById("search-panel");
  if (panel) setUpSearch(panel);
  const print = document.getElementById("print");
  if (print) print.addEventListener("click", () => window.print());
  const sourceImage = document.getElementById("source-image");
  if (sourceImage) sourceImageFallback(sourceImage);
});

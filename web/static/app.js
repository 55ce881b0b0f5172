// Pixelproof page: upload a folder in several requests, long-poll the job, then list the results.
"use strict";
(() => {
  const FILES_PER_REQUEST = 200;
  const $ = (id) => document.getElementById(id);
  const tokenInput = $("token");
  tokenInput.value = localStorage.getItem("pixelproof-token") || "";
  tokenInput.addEventListener("change", () => localStorage.setItem("pixelproof-token", tokenInput.value));

  function headers() {
    const t = tokenInput.value.trim();
    return t ? { Authorization: "Bearer " + t } : {};
  }

  function showError(message) {
    const el = $("error");
    el.textContent = message;
    el.hidden = false;
  }

  async function api(url) {
    const resp = await fetch(url, { headers: headers() });
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) {
      const err = new Error(body.error || resp.statusText);
      err.status = resp.status;
      err.retryAfter = Number(resp.headers.get("Retry-After")) || 0;
      throw err;
    }
    return body;
  }

  // Tokens travel in a header only, never in a URL (logs, history, Referer): images and downloads are fetched
  // with the header and handed to the page as blob: URLs.
  async function blobUrl(url) {
    const resp = await fetch(url, { headers: headers() });
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    return URL.createObjectURL(await resp.blob());
  }

  async function showImage(img, url) {
    try {
      img.src = await blobUrl(url);
      img.addEventListener("load", () => URL.revokeObjectURL(img.src), { once: true });
    } catch (_) { img.alt = "no thumbnail"; }
  }

  // Thumbnails load as their rows scroll into view, like loading="lazy" would for a plain src.
  const lazy = new IntersectionObserver((seen) => {
    for (const e of seen) {
      if (!e.isIntersecting) continue;
      lazy.unobserve(e.target);
      showImage(e.target, e.target.dataset.src);
    }
  }, { rootMargin: "400px" });

  async function download(url, name) {
    const href = await blobUrl(url);
    const a = document.createElement("a");
    a.href = href;
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(href), 60000);
  }

  // One multipart request; resolves with the job JSON. XHR because fetch has no upload progress.
  function send(url, batch, onProgress) {
    return new Promise((resolve, reject) => {
      const form = new FormData();
      for (const { file, path } of batch) form.append("files", file, path);
      const xhr = new XMLHttpRequest();
      xhr.open("POST", url);
      for (const [k, v] of Object.entries(headers())) xhr.setRequestHeader(k, v);
      xhr.upload.onprogress = (e) => onProgress(e.loaded);
      xhr.onload = () => {
        let body = {};
        try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
        if (xhr.status === 202) resolve(body);
        // The queue is down, but the files are stored in the job and will be queued when it is back.
        else if (xhr.status === 503 && body.job) resolve({ id: body.job, warning: body.error });
        else reject(new Error(body.error || `upload failed (HTTP ${xhr.status})`));
      };
      xhr.onerror = () => reject(new Error("the server could not be reached"));
      xhr.send(form);
    });
  }

  async function upload(entries) {
    if (!entries.length) return;
    $("progress").hidden = false;
    $("error").hidden = true;
    $("results").hidden = true;
    $("downloads").hidden = true;
    $("results").querySelector("tbody").innerHTML = "";
    const totalBytes = entries.reduce((n, e) => n + e.file.size, 0) || 1;
    let sentBytes = 0;
    let job = null;
    for (let i = 0; i < entries.length; i += FILES_PER_REQUEST) {
      const batch = entries.slice(i, i + FILES_PER_REQUEST);
      const batchBytes = batch.reduce((n, e) => n + e.file.size, 0);
      const url = job ? `/api/jobs/${job.id}/files` : "/api/jobs";
      job = await send(url, batch, (loaded) => {
        const done = Math.min(sentBytes + loaded, totalBytes);
        $("upload-bar").value = done / totalBytes;
        $("upload-text").textContent = `${Math.min(i + batch.length, entries.length)} / ${entries.length} files`;
      });
      sentBytes += batchBytes;
      if (i === 0) history.replaceState(null, "", `?job=${job.id}`);
      if (job.warning) {
        showError(`${job.warning} The page keeps watching the job.`);
        job = await api(`/api/jobs/${job.id}`);
      }
      render(job);
    }
    $("upload-bar").value = 1;
    $("upload-text").textContent = `${entries.length} / ${entries.length} files`;
    await follow(job.id, job);
  }

  function render(job) {
    $("job-bar").value = job.total ? job.done / job.total : 0;
    $("job-text").textContent = `${job.done} / ${job.total}` + (job.errors ? ` (${job.errors} errors)` : "");
    $("status").textContent = `Job ${job.id}: ${job.status}` + (job.model ? ` · model ${job.model.version}` : "");
    $("status").dataset.status = job.status;
    $("counts").textContent = `real: ${job.counts.real} · AI-generated: ${job.counts.fake}` +
      ` · uncertain: ${job.counts.uncertain || 0}`;
    const t = job.model && job.model.thresholds;
    if (t) {
      $("legend").textContent = t.real_below === t.fake_from
        ? `This model labels an image AI-generated when P ≥ ${t.fake_from.toFixed(3)}, real below it.`
        : `This model labels an image AI-generated when P ≥ ${t.fake_from.toFixed(3)} (chosen on calibration data so that about 1 in 100 ` +
          `real photos reached it), real when P < ${t.real_below.toFixed(3)}, and uncertain in between.`;
      $("legend").hidden = false;
    }
  }

  const LABEL_TEXT = { fake: "AI-generated", real: "real", uncertain: "uncertain" };

  // Green for crops that look real, red for crops that look generated; the further from 0.5, the stronger.
  function heat(p) {
    const a = Math.min(0.75, Math.abs(p - 0.5) * 1.5).toFixed(2);
    return p >= 0.5 ? `rgba(176, 0, 32, ${a})` : `rgba(27, 127, 59, ${a})`;
  }

  function openDetail(jobId, r) {
    $("detail-name").textContent = r.filename;
    const verdict = LABEL_TEXT[r.label] || r.label;
    let why = "";
    if (r.fake_from != null) {
      why = r.label === "fake" ? ` (P ≥ ${r.fake_from.toFixed(3)})`
        : r.label === "real" ? ` (P < ${r.real_below.toFixed(3)})`
        : ` (between ${r.real_below.toFixed(3)} and ${r.fake_from.toFixed(3)})`;
    }
    $("detail-verdict").textContent = `${verdict}: P(AI-generated) = ${r.p_fake.toFixed(3)}${why}` +
      (r.image_width ? ` · ${r.image_width} × ${r.image_height} px` : "") + ` · model ${r.model_version}`;
    const map = $("detail-map");
    map.textContent = "";
    const tbody = $("detail-regions").querySelector("tbody");
    tbody.textContent = "";
    for (const g of r.regions || []) {
      const box = document.createElement("div");
      box.style.left = `${(100 * g.x) / r.image_width}%`;
      box.style.top = `${(100 * g.y) / r.image_height}%`;
      box.style.width = `${(100 * g.w) / r.image_width}%`;
      box.style.height = `${(100 * g.h) / r.image_height}%`;
      box.style.background = heat(g.p_fake);
      box.title = `P(AI-generated) ${g.p_fake.toFixed(3)}`;
      map.appendChild(box);
      const tr = document.createElement("tr");
      for (const text of [`${g.x}, ${g.y}, ${g.w} × ${g.h}`, g.p_fake.toFixed(3)]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.appendChild(td);
      }
      tbody.appendChild(tr);
    }
    $("detail-regions").hidden = !(r.regions || []).length;
    $("detail-img").removeAttribute("src");
    showImage($("detail-img"), `/api/jobs/${jobId}/images/${r.id}/thumbnail?size=512`);
    $("detail").showModal();
  }

  // Long-poll: the server answers as soon as `done` moves, so a one-image job shows up without delay.
  async function follow(jobId, job) {
    $("progress").hidden = false;
    let done = job ? job.done : -1;
    let failures = 0;
    for (;;) {
      try {
        job = await api(`/api/jobs/${jobId}?wait=20&done=${done}`);
        failures = 0;
        $("error").hidden = true;
      } catch (e) {
        if (e.status === 429 && e.retryAfter) {  // the server has too many waiting requests: wait our turn
          await new Promise((r) => setTimeout(r, e.retryAfter * 1000));
          continue;
        }
        // A restarting server or a dropped connection: say so, back off, keep following the job.
        if (/no job/.test(e.message) || ++failures > 30) throw e;
        showError(`${e.message}; retrying…`);
        await new Promise((r) => setTimeout(r, Math.min(10000, 500 * 2 ** Math.min(failures, 5))));
        continue;
      }
      render(job);
      done = job.done;
      if (job.status === "done") break;
    }
    await showResults(jobId);
  }

  async function showResults(jobId) {
    const tbody = $("results").querySelector("tbody");
    tbody.innerHTML = "";
    let cursor = "0";
    while (cursor !== null) {
      const page = await api(`/api/jobs/${jobId}/results?limit=1000&cursor=${cursor}`);
      const frag = document.createDocumentFragment();
      for (const r of page.items) {
        const tr = document.createElement("tr");
        tr.className = r.status === "error" ? "error" : r.label || "";
        const img = document.createElement("img");
        img.alt = "";
        if (r.status === "done") {
          img.dataset.src = `/api/jobs/${jobId}/images/${r.id}/thumbnail`;
          lazy.observe(img);
          tr.addEventListener("click", () => openDetail(jobId, r));
        }
        const cells = [img, r.filename, r.status === "error" ? "error" : (LABEL_TEXT[r.label] || r.label || ""),
                       r.p_fake == null ? "" : r.p_fake.toFixed(3), r.error || ""];
        cells.forEach((c, k) => {
          const td = document.createElement("td");
          if (c instanceof Node) td.appendChild(c); else td.textContent = c;
          if (k === 2) td.className = "label";
          tr.appendChild(td);
        });
        frag.appendChild(tr);
      }
      tbody.appendChild(frag);
      cursor = page.next_cursor;
    }
    $("results").hidden = false;
    for (const fmt of ["csv", "json"]) {
      $(`dl-${fmt}`).onclick = (e) => {
        e.preventDefault();
        run(download(`/api/jobs/${jobId}/results?format=${fmt}&download=1`, `pixelproof-${jobId}.${fmt}`));
      };
    }
    $("downloads").hidden = false;
  }

  function fromInput(input) {
    return Array.from(input.files).map((file) => ({ file, path: file.webkitRelativePath || file.name }));
  }

  // Folders dropped on the page arrive as entries; walk them so nested paths keep their folder names.
  async function fromDrop(items) {
    const out = [];
    async function walk(entry, prefix) {
      if (entry.isFile) {
        const file = await new Promise((res, rej) => entry.file(res, rej));
        out.push({ file, path: prefix + file.name });
      } else if (entry.isDirectory) {
        const reader = entry.createReader();
        for (;;) {
          const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
          if (!batch.length) break;
          for (const child of batch) await walk(child, prefix + entry.name + "/");
        }
      }
    }
    const entries = Array.from(items).map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
    for (const e of entries) await walk(e, "");
    return out;
  }

  const run = (p) => p.catch((e) => showError(e.message));
  $("folder-input").addEventListener("change", (e) => run(upload(fromInput(e.target))));
  $("files-input").addEventListener("change", (e) => run(upload(fromInput(e.target))));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    run(fromDrop(e.dataTransfer.items).then(upload));
  });

  // Only a job id (url-safe base64) is taken from the address bar, so ?job= can never point the page's
  // authorised requests at another API path.
  const existing = new URLSearchParams(location.search).get("job");
  if (existing && /^[A-Za-z0-9_-]{1,32}$/.test(existing)) run(follow(existing, null));
  else if (existing) showError("the address names no valid job id");
})();

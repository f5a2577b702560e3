// The portal's one script: live rows on the job list, live status on a job's page, and the
// submission form (built on the server from GET /v1/quantizers), which checks the spec with
// the API's own messages and submits through the public API. No library, nothing loaded
// from elsewhere.
"use strict";

(function () {
  const FINAL = new Set(["succeeded", "failed", "cancelled"]);

  function csrf() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  async function api(method, path, body, isForm) {
    const headers = { "Accept": "application/json" };
    const token = csrf();
    if (token) headers["X-CSRF-Token"] = token;
    const init = { method: method, headers: headers, credentials: "same-origin" };
    if (body !== undefined) {
      if (isForm) {
        init.body = body;
      } else {
        headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(body);
      }
    }
    const response = await fetch(path, init);
    let data = null;
    if (response.status !== 204) {
      try { data = await response.json(); } catch (e) { data = null; }
    }
    return { ok: response.ok, status: response.status, data: data };
  }

  function errorText(result) {
    const error = result.data && result.data.error;
    if (error) return error.message;
    return "The service answered " + result.status + ".";
  }

  // --- the job list: reload the rows while some job is queued or running ---------------------
  function jobList() {
    const body = document.getElementById("job-rows");
    if (!body) return;
    async function refresh() {
      if (body.dataset.active !== "true") return;
      const checked = new Set(
        Array.from(body.querySelectorAll('input[name="id"]:checked')).map((c) => c.value));
      try {
        const response = await fetch("/ui/rows?" + body.dataset.query,
                                      { credentials: "same-origin" });
        if (response.ok) {
          const html = await response.text();
          body.innerHTML = html;
          body.querySelectorAll('input[name="id"]').forEach((c) => {
            c.checked = checked.has(c.value);
          });
          const active = Array.from(body.querySelectorAll("tr[data-status]"))
            .some((row) => !FINAL.has(row.dataset.status));
          body.dataset.active = active ? "true" : "false";
        }
      } catch (e) { /* the next tick tries again */ }
      if (body.dataset.active === "true") setTimeout(refresh, 2000);
    }
    setTimeout(refresh, 2000);
  }

  // --- a job's page: status and progress from the job's event stream --------------------------
  function jobPage() {
    const state = document.getElementById("job-state");
    if (!state) return;
    const jobId = state.dataset.job;
    const message = document.getElementById("action-message");
    const cancel = document.getElementById("cancel-job");
    if (cancel) {
      cancel.addEventListener("click", async () => {
        cancel.disabled = true;
        const result = await api("POST", "/v1/jobs/" + jobId + "/cancel");
        message.textContent = result.ok ? "Cancelled." : errorText(result);
        if (!result.ok) cancel.disabled = false;
      });
    }
    const remove = document.getElementById("delete-job");
    if (remove) {
      remove.addEventListener("click", async () => {
        if (!window.confirm("Delete this job and its artifacts?")) return;
        const result = await api("DELETE", "/v1/jobs/" + jobId);
        if (result.ok) { window.location.assign("/ui/"); return; }
        message.textContent = errorText(result);
      });
    }
    if (FINAL.has(state.dataset.status) || !window.EventSource) return;
    const status = document.getElementById("job-status");
    const stage = document.getElementById("job-stage");
    const progress = document.getElementById("job-progress");
    const progressText = document.getElementById("job-progress-text");
    const events = new EventSource("/v1/jobs/" + jobId + "/events");
    events.addEventListener("job", (event) => {
      const job = JSON.parse(event.data);
      status.textContent = job.status;
      status.className = "status status-" + job.status;
      stage.textContent = job.stage || "—";
      progress.value = job.progress;
      const pct = Math.round(job.progress * 100) + " %";
      progress.textContent = pct;
      progressText.textContent = pct;
      if (FINAL.has(job.status)) {
        events.close();
        window.location.reload();  // the report, artifacts and actions of a finished job
      }
    });
  }

  // --- the submission form ---------------------------------------------------------------------
  function numberOr(text, numeric) {
    const trimmed = text.trim();
    if (trimmed === "") return undefined;
    const pattern = numeric === "integer" ? /^[-+]?\d+$/ : /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;
    return pattern.test(trimmed) ? Number(trimmed) : trimmed;  // the API names what is wrong
  }

  function listOf(text) {
    return text.split(",").map((s) => s.trim()).filter((s) => s !== "");
  }

  function jobForm() {
    const form = document.getElementById("job-form");
    if (!form) return;
    const kind = document.getElementById("job-kind");
    const method = document.getElementById("f-method");
    const fields = Array.from(form.querySelectorAll("[data-param]"));
    const formError = document.getElementById("form-error");
    const formStatus = document.getElementById("form-status");
    const preview = document.getElementById("spec-preview");
    const submit = document.getElementById("submit-button");
    let checkTimer = null;
    let lastCheck = 0;
    // (form.dataset would be the form's control named "dataset", not its data attributes)
    const fromModel = form.getAttribute("data-model-id");
    const fromDataset = form.getAttribute("data-dataset-id");

    function applies(field) {
      const methods = field.dataset.methods;
      return !methods || methods.split(" ").includes(method.value);
    }

    function layout() {
      fields.forEach((field) => {
        const on = applies(field);
        field.hidden = !on;
        field.querySelectorAll("input, select, textarea").forEach((c) => { c.disabled = !on; });
      });
      form.querySelectorAll("[data-for-kind]").forEach((set) => {
        const on = set.dataset.forKind === kind.value;
        set.hidden = !on;
        set.disabled = !on;
      });
      form.querySelectorAll("[data-kind-note]").forEach((n) => {
        n.hidden = kind.value === "quantize";
      });
    }

    function baseSpec() {
      const spec = {};
      const problems = [];
      fields.forEach((field) => {
        if (!applies(field)) return;
        const name = field.dataset.param;
        const control = field.dataset.control;
        const input = document.getElementById("f-" + name);
        const fallback = JSON.parse(field.dataset.default);
        let value;
        if (control === "checkbox") {
          value = input.checked;
        } else if (control === "select") {
          value = input.value === "" ? null : input.value;
        } else if (control === "list") {
          value = listOf(input.value);
        } else if (control === "json") {
          if (input.value.trim() === "") {
            value = fallback === null ? null : [];
          } else {
            try { value = JSON.parse(input.value); } catch (e) {
              problems.push([name, name + " is not valid JSON: " + e.message]);
              return;
            }
          }
        } else {
          value = numberOr(input.value, field.dataset.numeric);
          if (value === undefined) value = null;
        }
        if (JSON.stringify(value) !== JSON.stringify(fallback)) spec[name] = value;
      });
      return { spec: spec, problems: problems };
    }

    function buildSpec() {
      const built = baseSpec();
      if (kind.value === "quantize") return built;
      if (kind.value === "sweep") {
        const grid = {};
        const bits = listOf(document.getElementById("grid-bits").value)
          .map((b) => numberOr(b, "integer"));
        if (bits.length) grid.bits = bits;
        const methods = Array.from(form.querySelectorAll('input[name="grid_method"]:checked'))
          .map((c) => c.value);
        if (methods.length) grid.method = methods;
        const grans = Array.from(form.querySelectorAll('input[name="grid_granularity"]:checked'))
          .map((c) => c.value);
        if (grans.length) grid.granularity = grans;
        return { spec: { base: built.spec, grid: grid }, problems: built.problems };
      }
      const search = { base: built.spec };
      const drop = numberOr(document.getElementById("search-drop").value, "number");
      if (drop !== undefined) search.max_top1_drop = drop;
      const bits = listOf(document.getElementById("search-bits").value)
        .map((b) => numberOr(b, "integer"));
      if (bits.length) search.candidates = { bits: bits };
      search.mixed_precision = document.getElementById("search-mixed").checked;
      return { spec: search, problems: built.problems };
    }

    function labels() {
      const text = document.getElementById("job-labels").value;
      const out = {};
      for (const part of listOf(text)) {
        const at = part.indexOf("=");
        const key = (at < 0 ? part : part.slice(0, at)).trim();
        if (!/^[A-Za-z0-9][A-Za-z0-9._\/-]{0,62}$/.test(key)) return { error: "label key " + JSON.stringify(key) + " must be 1 to 63 letters, digits and . _ / -" };
        out[key] = at < 0 ? "" : part.slice(at + 1).trim();
      }
      return { labels: out };
    }

    function clearErrors() {
      form.querySelectorAll(".field-error").forEach((e) => { e.textContent = ""; });
      form.querySelectorAll("[aria-invalid]").forEach((c) => c.removeAttribute("aria-invalid"));
      formError.textContent = "";
    }

    // The API's message names the field first ("bits=40 must be ...", "support='value' needs
    // ..."): it is shown under that field, and at the top of the form.
    function showError(message, field) {
      formError.textContent = message;
      let target = null;
      if (field) {
        target = document.getElementById(field + "-error") ||
          document.getElementById("f-" + field + "-error");
      } else {
        const match = /^([a-z_]+)\b/.exec(message || "");
        if (match) target = document.getElementById("f-" + match[1] + "-error");
      }
      if (!target && /^(grid|candidates)/.test(message)) target = document.getElementById("grid-error");
      if (!target && /^(max_top1_drop|mixed_precision|candidates)/.test(message)) target = document.getElementById("search-error");
      if (target) {
        target.textContent = message;
        const control = document.getElementById(target.id.replace(/-error$/, ""));
        if (control) control.setAttribute("aria-invalid", "true");
      }
    }

    async function check() {
      const built = buildSpec();
      preview.textContent = JSON.stringify(built.spec, null, 2);
      clearErrors();
      const lab = labels();
      if (lab.error) { showError(lab.error, "job-labels"); return false; }
      if (built.problems.length) { showError(built.problems[0][1], built.problems[0][0]); return false; }
      const mine = ++lastCheck;
      const result = await api("POST", "/v1/quantizers/check", { kind: kind.value, spec: built.spec });
      if (mine !== lastCheck) return false;  // a newer check is under way
      if (!result.ok) { showError(errorText(result)); return false; }
      return true;
    }

    function scheduleCheck() {
      clearTimeout(checkTimer);
      checkTimer = setTimeout(check, 250);
    }

    form.addEventListener("input", scheduleCheck);
    form.addEventListener("change", () => { layout(); scheduleCheck(); });
    layout();
    preview.textContent = JSON.stringify(buildSpec().spec, null, 2);

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearTimeout(checkTimer);
      submit.disabled = true;
      formStatus.textContent = "Checking the spec…";
      try {
        if (!(await check())) { formStatus.textContent = ""; return; }
        const built = buildSpec();
        const modelFile = document.getElementById("model-file").files[0];
        const datasetFile = document.getElementById("dataset-file").files[0];
        const name = document.getElementById("job-name").value.trim();
        const lab = labels().labels;
        let result;
        if (modelFile) {
          const data = new FormData();
          data.append("model", modelFile);
          if (datasetFile) data.append("dataset", datasetFile);
          data.append("kind", kind.value);
          data.append("spec", JSON.stringify(built.spec));
          if (name) data.append("name", name);
          if (Object.keys(lab).length) data.append("labels", JSON.stringify(lab));
          formStatus.textContent = "Uploading and submitting…";
          result = await api("POST", "/v1/jobs", data, true);
        } else if (fromModel) {
          const body = { model_id: fromModel, kind: kind.value, spec: built.spec, labels: lab };
          if (datasetFile) {
            const data = new FormData();
            data.append("file", datasetFile);
            const uploaded = await api("POST", "/v1/datasets", data, true);
            if (!uploaded.ok) { showError(errorText(uploaded)); formStatus.textContent = ""; return; }
            body.dataset_id = uploaded.data.id;
          } else if (fromDataset) {
            body.dataset_id = fromDataset;
          }
          if (name) body.name = name;
          formStatus.textContent = "Submitting…";
          result = await api("POST", "/v1/jobs", body);
        } else {
          showError("Choose a model file.", "model-file");
          formStatus.textContent = "";
          return;
        }
        if (!result.ok) { showError(errorText(result)); formStatus.textContent = ""; return; }
        formStatus.textContent = "Submitted.";
        window.location.assign("/ui/jobs/" + result.data.id);
      } catch (e) {
        showError("The request failed: " + e.message);
        formStatus.textContent = "";
      } finally {
        submit.disabled = false;
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const page = document.body.dataset.page;
    if (page === "jobs") jobList();
    if (page === "job") jobPage();
    if (page === "new") jobForm();
  });
})();

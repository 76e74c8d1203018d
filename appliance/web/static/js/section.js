// Read and write one section of the draft (GET/PUT /api/config/draft/<section>); without a
// draft the running revision's section is shown (the first save creates the draft). Whether
// there is a draft is asked first, so a page without one logs no 404.

import { api, revisionFacts } from "./lib.js";

function unwrap(resp, section) {
  if (resp && typeof resp === "object" && !Array.isArray(resp)) {
    if (section in resp) return resp[section];
    if (resp.document && typeof resp.document === "object") {
      return section in resp.document ? resp.document[section] : resp.document;
    }
  }
  return resp;
}

export async function loadSection(section) {
  const facts = await revisionFacts();
  if (facts.draft) {
    try {
      const resp = await api("GET", `/api/config/draft/${section}`);
      return { value: unwrap(resp, section), source: "draft", revision: resp?.revision?.id ?? resp?.revision ?? null };
    } catch (e) {
      if (e.status !== 404) throw e; // committed meanwhile: the running one follows
    }
  }
  if (!facts.running && !facts.draft) return { value: undefined, source: "none", revision: null };
  try {
    const run = await api("GET", "/api/config/running");
    return { value: (run.document || {})[section], source: "running", revision: run.revision?.id ?? run.revision ?? null };
  } catch (e) {
    if (e.status !== 404) throw e;
    return { value: undefined, source: "none", revision: null };
  }
}

export function saveSection(section, value) {
  return api("PUT", `/api/config/draft/${section}`, value);
}

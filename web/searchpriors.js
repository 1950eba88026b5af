// ComfyUI-SearchPriors in the browser: text the pack's nodes produce, shown as the user expects to read it.
// Tested with ComfyUI 0.3.75 and its pinned frontend 1.32.9, and with frontend 1.58.1 (classic canvas and
// "Nodes 2.0"); what differs between them is noted where it matters.
//
// 1. A pack node that sends text to the page (the Motion Retriever's ranked report) shows it on the node,
//    in a read-only Markdown box (added the first time text arrives, after every input widget, so saved
//    workflows keep their widget order). The box fills the node and scrolls: in "Nodes 2.0" mode, where a
//    node grows to fit its content, the box's content does not count towards the node's size, so a long
//    report does not push the node over the one below it.
// 2. Preview as Text. Frontend 1.32 shows the text as Markdown (a widget named 'preview'); 1.58 has a text
//    preview widget ('preview_text', type 'textPreview') with a 'preview_mode' switch: Plain text (a
//    monospace text box) or Markdown (rendered in "Nodes 2.0" only: 1.58.1's classic canvas keeps showing
//    the text box whatever the switch says). The widget is found by what it is, not by one of those names. In
//    Markdown a single newline is no line break, so reference captions (one per line) and the build report
//    would run together into one paragraph: for previews fed by a pack node, each line ends in a Markdown
//    hard break (two trailing spaces, invisible in plain text), runs of spaces are kept as no-break spaces,
//    and the cells of a Markdown table are padded to their column's width, so the table renders as a table
//    in Markdown and reads as an aligned grid in the plain-text box. Only the display changes: the STRING
//    that flows to other nodes is untouched.
// 3. POS presets (the paper's eta / gamma per backbone): picking one on Gaussian Noise Mix or a Hybrid
//    Semantic Guider / Sampler writes its values into the eta and gamma widgets of every such node in the
//    graph, and sets the same preset there, so one choice fills both. The widgets stay free: "custom" leaves
//    them as they are (the server applies a preset's values in any case; this only shows them).

// 4. The Templates dialog lists a pack's workflows/*.json in the order the server's folder listing gives (and,
//    frontends 1.32.9 and 1.58.1, with the file name as title and description, with no way for a pack to set
//    either). The pack's cards are put in the order of template_cards.json (what to run first, first); the
//    dialog keeps it under its default sort ("newest": no template has a date). Each card's one-line
//    description is drawn on its thumbnail (scripts/make_template_thumbnails.py).

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const PACK_PREFIX = "SearchPriors_";
const REPORT_WIDGET = "searchpriors_report";

function isTableLine(line) {
  return line.trimStart().startsWith("|");
}

// The cells of one Markdown table row ("| a | b |" -> ["a", "b"]); an escaped pipe (\|) stays in its cell.
function tableCells(line) {
  let body = line.trim();
  if (body.startsWith("|")) body = body.slice(1);
  if (body.endsWith("|") && !body.endsWith("\\|")) body = body.slice(0, -1);
  return body.split(/(?<!\\)\|/).map((cell) => cell.trim());
}

const DELIMITER_CELL = /^:?-+:?$/;

// A block of table lines with every column padded to its widest cell (right-aligned where the delimiter row
// says "--:"), so the raw Markdown reads as a grid in a monospace box; it renders as the same table.
export function alignTable(lines) {
  const rows = lines.map(tableCells);
  const columns = Math.max(...rows.map((row) => row.length));
  const isDelimiter = rows.map((row) => row.length > 0 && row.every((cell) => DELIMITER_CELL.test(cell)));
  const delimiter = rows.find((_, i) => isDelimiter[i]) ?? [];
  const widths = Array.from({ length: columns }, (_, c) => Math.max(3, ...rows
    .filter((_, i) => !isDelimiter[i]).map((row) => (row[c] ?? "").length)));
  const right = widths.map((_, c) => /^-+:$/.test(delimiter[c] ?? ""));
  const centre = widths.map((_, c) => /^:-+:$/.test(delimiter[c] ?? ""));
  return rows.map((row, i) => {
    const cells = widths.map((width, c) => {
      const cell = row[c] ?? "";
      if (isDelimiter[i]) {
        if (right[c]) return "-".repeat(width - 1) + ":";
        if (centre[c]) return ":" + "-".repeat(width - 2) + ":";
        return cell.startsWith(":") ? ":" + "-".repeat(width - 1) : "-".repeat(width);
      }
      return right[c] ? cell.padStart(width) : cell.padEnd(width);
    });
    return "| " + cells.join(" | ") + " |";
  });
}

// Markdown that shows every line of `text` on its own line, and its tables aligned (see 2. above).
export function keepLines(text) {
  const lines = String(text ?? "").split("\n");
  for (let start = 0; start < lines.length; start++) {
    if (!isTableLine(lines[start])) continue;
    let end = start;
    while (end < lines.length && isTableLine(lines[end])) end++;
    lines.splice(start, end - start, ...alignTable(lines.slice(start, end)));
    start = end - 1;
  }
  return lines
    .map((line, i) => {
      const next = lines[i + 1];
      const breaks = line.trim() !== "" && next !== undefined && next.trim() !== ""
        && !isTableLine(line) && !isTableLine(next);
      // runs of spaces (aligned columns of a report) would collapse to one: keep them as no-break spaces
      const kept = isTableLine(line) ? line : line.replace(/ {2,}/g, (run) => "\u00a0".repeat(run.length));
      return breaks ? kept.replace(/\s+$/, "") + "  " : kept;
    })
    .join("\n");
}

// The plain-text box (1.58's Plain text mode) wraps long lines, so a wide table cannot stay a grid there:
// each row reads as one line of "column: value" pairs ("#1 score: 2.554, ..., caption: a man rides ...").
// Other lines are left as they are (the box keeps line breaks and spaces).
export function plainText(text) {
  const lines = String(text ?? "").split("\n");
  const out = [];
  for (let start = 0; start < lines.length; start++) {
    if (!isTableLine(lines[start])) {
      out.push(lines[start]);
      continue;
    }
    let end = start;
    while (end < lines.length && isTableLine(lines[end])) end++;
    const rows = lines.slice(start, end).map(tableCells)
      .filter((row) => !(row.length && row.every((cell) => DELIMITER_CELL.test(cell))));
    const [header, ...body] = rows;
    for (const row of body) {
      const pairs = row.map((cell, c) => (header[c] ? `${header[c]}: ${cell}` : cell));
      if (header[0] === "#") pairs[0] = `#${row[0]}`;
      out.push(header[0] === "#" ? `${pairs[0]} ${pairs.slice(1).join(", ")}` : pairs.join(", "));
    }
    if (!body.length) out.push(header.join(", "));
    start = end - 1;
  }
  return out.join("\n").replace(/\\\|/g, "|");
}

// Preview as Text's preview widget, by what it is: 1.58's text preview (type 'textPreview', 'preview_text'),
// else 1.32's read-only Markdown box ('preview'); a widget of either name as the last resort.
export function textPreviewWidget(node) {
  const widgets = node?.widgets ?? [];
  return widgets.find((w) => w.type === "textPreview")
    ?? widgets.find((w) => w.serialize === false && (w.type === "MARKDOWN"
      || w.element?.classList?.contains("comfy-markdown")))
    ?? widgets.find((w) => w.name === "preview_text" || w.name === "preview")
    ?? null;
}

// 1.58's Plain text / Markdown switch beside the preview (none in 1.32, which always shows Markdown).
function previewModeWidget(node) {
  return node?.widgets?.find((w) => w.name === "preview_mode"
    || (w.type === "toggle" && /markdown/i.test(`${w.options?.on ?? ""} ${w.options?.label_on ?? ""}`)))
    ?? null;
}

function sourceNodeType(node) {
  const linkId = node.inputs?.[0]?.link;
  if (linkId == null) return null;
  const graph = node.graph ?? app.graph;
  const link = graph?.links?.get?.(linkId) ?? graph?.links?.[linkId];
  const origin = link ? graph.getNodeById(link.origin_id) : null;
  return origin?.type ?? null;
}

function markdownWidget(node, name) {
  const existing = node.widgets?.find((w) => w.name === name);
  if (existing) return existing;
  const widget = window.comfyAPI.widgets.ComfyWidgets.MARKDOWN(node, name, ["MARKDOWN", {}], app).widget;
  widget.options.read_only = true;
  widget.element.readOnly = true;
  widget.element.disabled = true;
  widget.serialize = false;
  const [width, height] = node.size;
  const wanted = node.computeSize();
  node.setSize([Math.max(width, wanted[0], 520), Math.max(height, wanted[1])]);
  return widget;
}

const POS_PRESET_NODES = new Set([
  "SearchPriors_GaussianNoiseMix", "SearchPriors_HybridSemanticGuider", "SearchPriors_HybridSemanticSampler",
]);

// {eta, gamma} named in a preset's text ("ModelScope (MSR-VTT): eta 0.2, gamma 0.04"); {} for "custom"
export function presetValues(text) {
  const values = {};
  for (const match of String(text ?? "").matchAll(/\b(eta|gamma) ([0-9]*\.?[0-9]+)/g)) {
    values[match[1]] = Number(match[2]);
  }
  return values;
}

function applyPreset(node, choice) {
  const values = presetValues(choice);
  for (const widget of node.widgets ?? []) {
    if (widget.name === "preset") widget.value = choice;
    else if (widget.name in values) widget.value = values[widget.name];
  }
  node.setDirtyCanvas?.(true, true);
}

function fillPosPreset(source, choice) {
  const graph = source.graph ?? app.graph;
  const nodes = graph?._nodes ?? graph?.nodes ?? [];
  for (const node of nodes) {
    if (POS_PRESET_NODES.has(node.type)) applyPreset(node, choice);
  }
  if (!nodes.includes(source)) applyPreset(source, choice);
}

app.registerExtension({
  name: "SearchPriors.PosPresets",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!POS_PRESET_NODES.has(nodeData.name)) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      onNodeCreated?.apply(this, arguments);
      const widget = this.widgets?.find((w) => w.name === "preset");
      if (!widget) return;
      const callback = widget.callback;
      const node = this;
      widget.callback = function (value) {
        callback?.apply(this, arguments);
        if (value !== "custom") fillPosPreset(node, value);
      };
    };
  },
});

// "Nodes 2.0" (1.58) lays a node out as a grid whose Markdown rows grow with their content: the report's
// content is kept out of that sum (contain: size), so its box takes the node's free height and scrolls. The
// same for the Markdown mode of a Preview as Text showing pack text (by node id: the DOM does not say what
// feeds a preview), so a long ranking table does not spread over the node below.
const REPORT_STYLE = `.lg-node [data-widget-name="${REPORT_WIDGET}"] .comfy-markdown-content { contain: size; }`;
const packPreviewIds = new Set();

function updateStyle() {
  let style = document.getElementById("searchpriors-style");
  if (!style) {
    style = document.createElement("style");
    style.id = "searchpriors-style";
    document.head.appendChild(style);
  }
  const previews = [...packPreviewIds].map((id) => `.lg-node[data-node-id="${CSS.escape(String(id))}"] `
    + '[data-widget-name="preview_text"] .comfy-markdown-content');
  style.textContent = REPORT_STYLE + (previews.length ? `\n${previews.join(",\n")} { contain: size; }` : "");
}

const PACK_TEXT = Symbol("searchpriors pack text");

// Whether the preview renders Markdown: always in 1.32 (no switch); in 1.58 when its switch says Markdown and
// the canvas is "Nodes 2.0" (1.58.1's classic canvas shows the plain-text box in either position).
function showsMarkdown(node) {
  const mode = previewModeWidget(node);
  if (!mode) return true;
  const nodes2 = app.extensionManager?.setting?.get?.("Comfy.VueNodes.Enabled") === true;
  return mode.value === true && nodes2;
}

// The preview shows the pack's text in the form its box renders: Markdown (keepLines) or plain (plainText).
function renderPackText(node) {
  const preview = textPreviewWidget(node);
  const text = node[PACK_TEXT];
  if (!preview || text == null) return;
  preview.value = showsMarkdown(node) ? keepLines(text) : plainText(text);
  node.setDirtyCanvas?.(true, true);
}

function showPackText(node, texts) {
  const fromPack = Array.isArray(texts) && texts.length && sourceNodeType(node)?.startsWith(PACK_PREFIX);
  node[PACK_TEXT] = fromPack ? String(texts[0]) : null;   // another source's text is left as the frontend shows it
  const had = packPreviewIds.has(node.id);
  if (fromPack) packPreviewIds.add(node.id);
  else packPreviewIds.delete(node.id);
  if (had !== Boolean(fromPack)) updateStyle();
  if (!fromPack) return;
  const mode = previewModeWidget(node);
  if (mode && !mode.searchpriorsWatched) {
    mode.searchpriorsWatched = true;
    const callback = mode.callback;
    mode.callback = function () {
      const result = callback?.apply(this, arguments);
      renderPackText(node);
      return result;
    };
  }
  renderPackText(node);
}

app.registerExtension({
  name: "SearchPriors.TextPreviews",
  setup() {
    updateStyle();
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name?.startsWith(PACK_PREFIX)) {
      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (message) {
        onExecuted?.apply(this, arguments);
        const texts = message?.text;
        if (Array.isArray(texts) && texts.length) {
          markdownWidget(this, REPORT_WIDGET).value = keepLines(texts.join("\n\n"));
          this.setDirtyCanvas?.(true, true);
        }
      };
    }
    if (nodeData.name === "PreviewAny") {
      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (message) {
        onExecuted?.apply(this, arguments);
        showPackText(this, message?.text);
      };
    }
  },
  // 1.58 also fills the preview when outputs are restored wholesale (a workflow reopened from the queue, a
  // tab switched back to); this runs after the frontend's own PreviewAny hook, as extensions load after it.
  onNodeOutputsUpdated(nodeOutputs) {
    for (const [locatorId, output] of Object.entries(nodeOutputs ?? {})) {
      if (String(locatorId).includes(":")) continue;   // a node inside a subgraph: left as the frontend shows it
      const node = app.graph?.getNodeById?.(Number(locatorId)) ?? app.graph?.getNodeById?.(locatorId);
      if (node?.type === "PreviewAny") showPackText(node, output?.text);
    }
  },
});

// ------------------------------------------------------------------------ 4. the order of the template cards
const PACK_MODULE = decodeURIComponent(new URL(import.meta.url).pathname.split("/").at(-2) ?? "");
const TEMPLATE_CARDS_URL = new URL("./template_cards.json", import.meta.url);

export function orderTemplates(names, order) {
  const rank = (name) => {
    const at = order.indexOf(name);
    return at < 0 ? order.length : at;
  };
  return [...names].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

if (typeof api?.getWorkflowTemplates === "function" && !api.getWorkflowTemplates.searchpriorsOrdered) {
  const listTemplates = api.getWorkflowTemplates.bind(api);
  api.getWorkflowTemplates = async function () {
    const templates = await listTemplates();
    const names = templates?.[PACK_MODULE];
    if (!Array.isArray(names)) return templates;
    try {
      const cards = await (await fetch(TEMPLATE_CARDS_URL)).json();
      templates[PACK_MODULE] = orderTemplates(names, cards.map((card) => card.name));
    } catch (error) {
      console.warn("SearchPriors: template_cards.json not read; the cards keep the server's order", error);
    }
    return templates;
  };
  api.getWorkflowTemplates.searchpriorsOrdered = true;
}

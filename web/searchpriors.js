// ComfyUI-SearchPriors in the browser: text the pack's nodes produce, shown as the user expects to read it.
//
// 1. A pack node that sends text to the page (the Motion Retriever's ranked report) shows it on the node,
//    in the same read-only Markdown box that Preview as Text uses (added the first time text arrives, after
//    every input widget, so saved workflows keep their widget order).
// 2. Preview as Text renders Markdown, where a single newline is no line break: reference captions (one per
//    line) and the build report would run together into one paragraph. For previews fed by a pack node,
//    each line ends in a Markdown hard break instead; tables and blank lines are left as they are. Only the
//    display changes: the STRING that flows to other nodes is untouched.
// 3. POS presets (the paper's eta / gamma per backbone): picking one on Gaussian Noise Mix or a Hybrid
//    Semantic Guider / Sampler writes its values into the eta and gamma widgets of every such node in the
//    graph, and sets the same preset there, so one choice fills both. The widgets stay free: "custom" leaves
//    them as they are (the server applies a preset's values in any case; this only shows them).

import { app } from "../../scripts/app.js";

const PACK_PREFIX = "SearchPriors_";
const REPORT_WIDGET = "searchpriors_report";

function isTableLine(line) {
  return line.trimStart().startsWith("|");
}

// Markdown that shows every line of `text` on its own line.
export function keepLines(text) {
  const lines = String(text ?? "").split("\n");
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

app.registerExtension({
  name: "SearchPriors.TextPreviews",
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
        const preview = this.widgets?.find((w) => w.name === "preview");
        if (preview && message?.text?.length && sourceNodeType(this)?.startsWith(PACK_PREFIX)) {
          preview.value = keepLines(message.text[0]);
        }
      };
    }
  },
});

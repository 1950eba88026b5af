// ComfyUI-SearchPriors in the browser: text the pack's nodes produce, shown as the user expects to read it.
//
// 1. A pack node that sends text to the page (the Motion Retriever's ranked report) shows it on the node,
//    in the same read-only Markdown box that Preview as Text uses (added the first time text arrives, after
//    every input widget, so saved workflows keep their widget order).
// 2. Preview as Text renders Markdown, where a single newline is no line break: reference captions (one per
//    line) and the build report would run together into one paragraph. For previews fed by a pack node,
//    each line ends in a Markdown hard break instead; tables and blank lines are left as they are. Only the
//    display changes: the STRING that flows to other nodes is untouched.

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

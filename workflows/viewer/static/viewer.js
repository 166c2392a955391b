// p2g view: renders a 2D Gaussian field with WebGL2, the maths of gaussian_field.render (torch_reference.py).
// Output pixel (c, r) samples the LR point origin + ((c + 0.5) / s_w, (r + 0.5) / s_h); each Gaussian adds
// colour * exp(-0.5 m), m its squared Mahalanobis distance through the Cholesky factor, and a term with
// m > 2 ln 255 is dropped. One instanced quad per Gaussian covers its 1/255 ellipse; terms are summed by
// additive blending into a float render target, then shown (clamped) beside bicubic of the same LR image.
"use strict";

const CUT = 2 * Math.log(255);
const MIN_SCALE = 1 / 16;
const MAX_SCALE = 64;
const DEFAULT_TILE = 128; // LR pixels per tile side: one buffer and one draw call per tile

const ACCUM_VS = `#version 300 es
precision highp float;
layout(location = 0) in vec2 aCorner;
layout(location = 1) in vec2 aMean;
layout(location = 2) in vec3 aChol;
layout(location = 3) in vec3 aColor;
uniform vec2 uOrigin;  // LR point at the output's top-left corner
uniform vec2 uScale;   // (s_w, s_h): output pixels per LR pixel
uniform vec2 uSize;    // output size in pixels
uniform float uCut;
flat out vec2 vMean;
flat out vec3 vChol;
flat out vec3 vColor;
void main() {
  vMean = aMean; vChol = aChol; vColor = aColor;
  if (!(aChol.x > 0.0 && aChol.z > 0.0)) { gl_Position = vec4(2.0, 2.0, 2.0, 1.0); return; }
  // Axis-aligned half extents of the 1/255 ellipse (lattice.support_half_extents), plus half a pixel of margin.
  vec2 halfExtent = sqrt(uCut) * vec2(aChol.x, length(aChol.yz)) * uScale + 0.5;
  vec2 pixel = (aMean - uOrigin) * uScale + aCorner * halfExtent;
  // Output row r lands on framebuffer row r, so readPixels returns rows top to bottom.
  gl_Position = vec4(pixel / uSize * 2.0 - 1.0, 0.0, 1.0);
}`;

const ACCUM_FS = `#version 300 es
precision highp float;
flat in vec2 vMean;
flat in vec3 vChol;
flat in vec3 vColor;
uniform vec2 uOrigin;
uniform vec2 uScale;
uniform float uCut;
out vec4 outColor;
void main() {
  vec2 p = uOrigin + gl_FragCoord.xy / uScale;  // gl_FragCoord is the pixel centre (c + 0.5, r + 0.5)
  vec2 d = p - vMean;
  float z1 = d.x / vChol.x;
  float z2 = (d.y - vChol.y * z1) / vChol.z;
  float m = z1 * z1 + z2 * z2;
  if (m > uCut) discard;
  outColor = vec4(vColor * exp(-0.5 * m), 0.0);
}`;

const SHOW_VS = `#version 300 es
void main() {
  vec2 v = vec2(float((gl_VertexID & 1) << 2) - 1.0, float((gl_VertexID & 2) << 1) - 1.0);
  gl_Position = vec4(v, 0.0, 1.0);
}`;

// Field (clamped), bicubic of the LR image (Keys a = -0.5, edge pixels repeated; black outside the image), or
// both split at uSplitX.
const SHOW_FS = `#version 300 es
precision highp float;
uniform sampler2D uField;
uniform sampler2D uLR;
uniform vec2 uOrigin;
uniform vec2 uScale;
uniform vec2 uSize;
uniform int uMode;       // 0 field, 1 bicubic, 2 split
uniform float uSplitX;   // output pixels left of the split show the field
uniform bool uFlip;      // drawing to the canvas: its row 0 is the bottom one
out vec4 outColor;
float cubic(float x) {
  x = abs(x);
  if (x <= 1.0) return (1.5 * x - 2.5) * x * x + 1.0;
  if (x < 2.0) return ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0;
  return 0.0;
}
vec3 bicubic(vec2 p) {
  ivec2 size = textureSize(uLR, 0);
  if (p.x < 0.0 || p.y < 0.0 || p.x >= float(size.x) || p.y >= float(size.y)) return vec3(0.0);
  vec2 u = p - 0.5;
  vec2 base = floor(u);
  vec2 t = u - base;
  vec3 sum = vec3(0.0);
  for (int j = -1; j <= 2; j++) {
    float wy = cubic(t.y - float(j));
    int y = clamp(int(base.y) + j, 0, size.y - 1);
    for (int i = -1; i <= 2; i++) {
      int x = clamp(int(base.x) + i, 0, size.x - 1);
      sum += wy * cubic(t.x - float(i)) * texelFetch(uLR, ivec2(x, y), 0).rgb;
    }
  }
  return sum;
}
void main() {
  vec2 frag = gl_FragCoord.xy;
  if (uFlip) frag.y = uSize.y - frag.y;
  vec2 p = uOrigin + frag / uScale;
  vec3 c;
  if (uMode == 1 || (uMode == 2 && frag.x >= uSplitX)) c = bicubic(p);
  else c = texelFetch(uField, ivec2(frag), 0).rgb;
  outColor = vec4(clamp(c, 0.0, 1.0), 1.0);
}`;

function halfTable() {
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
    if (exp === 0) table[h] = sign * frac * 2 ** -24;
    else if (exp === 31) table[h] = frac ? NaN : sign * Infinity;
    else table[h] = sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  return table;
}

function decodeArrays(header, buffer) {
  const n = header.count, total = n * 8;
  let values;
  if (header.dtype === "float16") {
    const raw = new Uint16Array(buffer, 0, total), table = halfTable();
    values = new Float32Array(total);
    for (let i = 0; i < total; i++) values[i] = table[raw[i]];
  } else if (header.dtype === "float32") {
    values = new Float32Array(buffer, 0, total);
  } else {
    throw new Error(`unknown field dtype ${header.dtype}`);
  }
  return { offsets: values.subarray(0, 2 * n), chol: values.subarray(2 * n, 5 * n), colors: values.subarray(5 * n) };
}

function compile(gl, vsSource, fsSource) {
  const program = gl.createProgram();
  for (const [type, source] of [[gl.VERTEX_SHADER, vsSource], [gl.FRAGMENT_SHADER, fsSource]]) {
    const shader = gl.createShader(type);
    gl.shaderSource(shader, source);
    gl.compileShader(shader);
    if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(shader));
    gl.attachShader(program, shader);
  }
  gl.linkProgram(program);
  if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(program));
  const uniforms = {};
  for (let i = 0; i < gl.getProgramParameter(program, gl.ACTIVE_UNIFORMS); i++) {
    const name = gl.getActiveUniform(program, i).name;
    uniforms[name] = gl.getUniformLocation(program, name);
  }
  return { program, uniforms };
}

// Gaussians of tile x tile LR pixels per buffer: interleaved (mean x, mean y, l11, l21, l22, r, g, b) float32.
function buildTiles(gl, header, arrays, tile, corner) {
  const { h, w, k } = header, kw = k * w, tiles = [];
  const reachOf = Math.sqrt(CUT);
  for (let ty = 0; ty < h; ty += tile) {
    for (let tx = 0; tx < w; tx += tile) {
      const rows = k * Math.min(tile, h - ty), cols = k * Math.min(tile, w - tx), count = rows * cols;
      const data = new Float32Array(count * 8);
      const box = [Infinity, Infinity, -Infinity, -Infinity];
      let o = 0;
      for (let r = k * ty; r < k * ty + rows; r++) {
        for (let c = k * tx; c < k * tx + cols; c++, o += 8) {
          const n = r * kw + c;
          const mx = Math.fround(c / k + arrays.offsets[2 * n]), my = Math.fround(r / k + arrays.offsets[2 * n + 1]);
          const l11 = arrays.chol[3 * n], l21 = arrays.chol[3 * n + 1], l22 = arrays.chol[3 * n + 2];
          data.set([mx, my, l11, l21, l22, arrays.colors[3 * n], arrays.colors[3 * n + 1], arrays.colors[3 * n + 2]], o);
          const ex = reachOf * Math.abs(l11), ey = reachOf * Math.hypot(l21, l22);
          box[0] = Math.min(box[0], mx - ex); box[1] = Math.min(box[1], my - ey);
          box[2] = Math.max(box[2], mx + ex); box[3] = Math.max(box[3], my + ey);
        }
      }
      const vao = gl.createVertexArray();
      gl.bindVertexArray(vao);
      gl.bindBuffer(gl.ARRAY_BUFFER, corner);
      gl.enableVertexAttribArray(0);
      gl.vertexAttribPointer(0, 2, gl.FLOAT, false, 0, 0);
      const buffer = gl.createBuffer();
      gl.bindBuffer(gl.ARRAY_BUFFER, buffer);
      gl.bufferData(gl.ARRAY_BUFFER, data, gl.STATIC_DRAW);
      for (const [loc, size, offset] of [[1, 2, 0], [2, 3, 8], [3, 3, 20]]) {
        gl.enableVertexAttribArray(loc);
        gl.vertexAttribPointer(loc, size, gl.FLOAT, false, 32, offset);
        gl.vertexAttribDivisor(loc, 1);
      }
      gl.bindVertexArray(null);
      tiles.push({ vao, buffer, count, box });
    }
  }
  return tiles;
}

class FieldViewer {
  constructor(canvas, header, arrays, lrImage, tile) {
    this.canvas = canvas;
    this.header = header;
    const gl = canvas.getContext("webgl2", { antialias: false, preserveDrawingBuffer: true, alpha: false });
    if (!gl) throw new Error("this browser has no WebGL2");
    this.gl = gl;
    if (!gl.getExtension("EXT_color_buffer_float")) throw new Error("WebGL2 without EXT_color_buffer_float: no float render target");
    // Blending into float32 needs EXT_float_blend; without it sums go to float16, which loses about a level.
    this.targetFormat = gl.getExtension("EXT_float_blend") ? gl.RGBA32F : gl.RGBA16F;
    this.accum = compile(gl, ACCUM_VS, ACCUM_FS);
    this.show = compile(gl, SHOW_VS, SHOW_FS);
    const corner = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, corner);
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 1, -1, -1, 1, 1, 1]), gl.STATIC_DRAW);
    this.tiles = buildTiles(gl, header, arrays, tile, corner);
    this.emptyVao = gl.createVertexArray();
    this.lrTexture = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D, this.lrTexture);
    gl.pixelStorei(gl.UNPACK_COLORSPACE_CONVERSION_WEBGL, gl.NONE);
    gl.pixelStorei(gl.UNPACK_PREMULTIPLY_ALPHA_WEBGL, false);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA8, gl.RGBA, gl.UNSIGNED_BYTE, lrImage);
    for (const p of [gl.TEXTURE_MIN_FILTER, gl.TEXTURE_MAG_FILTER]) gl.texParameteri(gl.TEXTURE_2D, p, gl.NEAREST);
    this.targets = {};
    this.view = { scale: 1, origin: [0, 0], split: false, splitAt: 0.5 };
    this.lastFrameMs = null;
  }

  target(name, width, height) {
    const gl = this.gl, old = this.targets[name];
    if (old && old.width === width && old.height === height) return old;
    if (old) { gl.deleteTexture(old.texture); gl.deleteFramebuffer(old.fbo); }
    const texture = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D, texture);
    const format = name === "field" ? this.targetFormat : gl.RGBA32F;
    gl.texStorage2D(gl.TEXTURE_2D, 1, format, width, height);
    for (const p of [gl.TEXTURE_MIN_FILTER, gl.TEXTURE_MAG_FILTER]) gl.texParameteri(gl.TEXTURE_2D, p, gl.NEAREST);
    const fbo = gl.createFramebuffer();
    gl.bindFramebuffer(gl.FRAMEBUFFER, fbo);
    gl.framebufferTexture2D(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0, gl.TEXTURE_2D, texture, 0);
    if (gl.checkFramebufferStatus(gl.FRAMEBUFFER) !== gl.FRAMEBUFFER_COMPLETE) throw new Error("float render target not supported");
    return (this.targets[name] = { texture, fbo, width, height });
  }

  // Sum every Gaussian into the "field" target of width x height at scale (s_w, s_h) from origin.
  drawField(width, height, scaleXY, origin) {
    const gl = this.gl, t = this.target("field", width, height), u = this.accum.uniforms;
    gl.bindFramebuffer(gl.FRAMEBUFFER, t.fbo);
    gl.viewport(0, 0, width, height);
    gl.clearColor(0, 0, 0, 0);
    gl.clear(gl.COLOR_BUFFER_BIT);
    gl.useProgram(this.accum.program);
    gl.uniform2f(u.uOrigin, origin[0], origin[1]);
    gl.uniform2f(u.uScale, scaleXY[0], scaleXY[1]);
    gl.uniform2f(u.uSize, width, height);
    gl.uniform1f(u.uCut, CUT);
    gl.enable(gl.BLEND);
    gl.blendEquation(gl.FUNC_ADD);
    gl.blendFunc(gl.ONE, gl.ONE);
    const view = [origin[0], origin[1], origin[0] + width / scaleXY[0], origin[1] + height / scaleXY[1]];
    let drawn = 0;
    for (const tile of this.tiles) {
      const b = tile.box;
      if (b[2] < view[0] || b[0] > view[2] || b[3] < view[1] || b[1] > view[3]) continue;
      gl.bindVertexArray(tile.vao);
      gl.drawArraysInstanced(gl.TRIANGLE_STRIP, 0, 4, tile.count);
      drawn++;
    }
    gl.bindVertexArray(null);
    gl.disable(gl.BLEND);
    this.tilesDrawn = drawn;
    return t;
  }

  // Show mode 0 (field), 1 (bicubic) or 2 (split) into a target, or the canvas when target is null.
  drawShow(target, width, height, scaleXY, origin, mode, splitX) {
    const gl = this.gl, u = this.show.uniforms;
    gl.bindFramebuffer(gl.FRAMEBUFFER, target ? target.fbo : null);
    gl.viewport(0, 0, width, height);
    gl.useProgram(this.show.program);
    gl.activeTexture(gl.TEXTURE0);
    gl.bindTexture(gl.TEXTURE_2D, this.targets.field.texture);
    gl.activeTexture(gl.TEXTURE1);
    gl.bindTexture(gl.TEXTURE_2D, this.lrTexture);
    gl.uniform1i(u.uField, 0);
    gl.uniform1i(u.uLR, 1);
    gl.uniform2f(u.uOrigin, origin[0], origin[1]);
    gl.uniform2f(u.uScale, scaleXY[0], scaleXY[1]);
    gl.uniform2f(u.uSize, width, height);
    gl.uniform1i(u.uMode, mode);
    gl.uniform1f(u.uSplitX, splitX);
    gl.uniform1i(u.uFlip, target ? 0 : 1);
    gl.bindVertexArray(this.emptyVao);
    gl.drawArrays(gl.TRIANGLES, 0, 3);
    gl.bindVertexArray(null);
  }

  readFloats(target) {
    const gl = this.gl, out = new Float32Array(target.width * target.height * 4);
    gl.bindFramebuffer(gl.FRAMEBUFFER, target.fbo);
    gl.readPixels(0, 0, target.width, target.height, gl.RGBA, gl.FLOAT, out);
    return out;
  }

  // An arbitrary view as float RGBA rows top to bottom: mode "field" (unclamped sums), "bicubic" or "split".
  renderArray(width, height, scaleXY, origin, mode, splitX) {
    const field = this.drawField(width, height, scaleXY, origin);
    if (mode === "field") return this.readFloats(field);
    const out = this.target("out", width, height);
    this.drawShow(out, width, height, scaleXY, origin, { bicubic: 1, split: 2 }[mode], splitX ?? width / 2);
    return this.readFloats(out);
  }

  get size() { return [this.canvas.width, this.canvas.height]; }

  currentMode() { return this.view.split ? 2 : 0; }
  splitX() { return Math.round(this.view.splitAt * this.canvas.width); }

  // Draw the current view to the canvas; returns milliseconds until the GPU finished (a one-pixel read waits).
  frame() {
    const gl = this.gl, [width, height] = this.size, s = this.view.scale;
    const start = performance.now();
    this.drawField(width, height, [s, s], this.view.origin);
    this.drawShow(null, width, height, [s, s], this.view.origin, this.currentMode(), this.splitX());
    gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, new Uint8Array(4));
    this.lastFrameMs = performance.now() - start;
    return this.lastFrameMs;
  }

  zoomAt(px, py, factor) {
    const v = this.view, s = v.scale;
    const next = Math.min(MAX_SCALE, Math.max(MIN_SCALE, s * factor));
    const qx = v.origin[0] + px / s, qy = v.origin[1] + py / s;  // the LR point under the cursor stays put
    v.origin = [qx - px / next, qy - py / next];
    v.scale = next;
  }

  pan(dxPixels, dyPixels) {
    const v = this.view;
    v.origin = [v.origin[0] - dxPixels / v.scale, v.origin[1] - dyPixels / v.scale];
  }

  fit() {
    const [width, height] = this.size, { h, w } = this.header;
    const s = Math.min(MAX_SCALE, Math.max(MIN_SCALE, Math.min(width / w, height / h)));
    this.view.scale = s;
    this.view.origin = [(w - width / s) / 2, (h - height / s) / 2];
  }

  // The current view as shown, quantised to 8 bits (round half up, as image_io.quantize) -> PNG data URL.
  viewPNG() {
    const [width, height] = this.size, s = this.view.scale;
    const src = this.renderArray(width, height, [s, s], this.view.origin, this.view.split ? "split" : "field",
                                 this.splitX());
    const pixels = new Uint8ClampedArray(width * height * 4);
    for (let i = 0; i < width * height; i++) {
      for (let c = 0; c < 3; c++) pixels[4 * i + c] = Math.round(Math.min(1, Math.max(0, src[4 * i + c])) * 255);
      pixels[4 * i + 3] = 255;
    }
    const canvas = document.createElement("canvas");
    canvas.width = width; canvas.height = height;
    canvas.getContext("2d").putImageData(new ImageData(pixels, width, height), 0, 0);
    return canvas.toDataURL("image/png");
  }
}

function rendererName(gl) {
  const debug = gl.getExtension("WEBGL_debug_renderer_info");
  return gl.getParameter(debug ? debug.UNMASKED_RENDERER_WEBGL : gl.RENDERER);
}

function toBase64(floats) {
  const bytes = new Uint8Array(floats.buffer, floats.byteOffset, floats.byteLength);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error(`cannot load ${url}`));
    image.src = url;
  });
}

function showMessage(text) {
  const box = document.getElementById("message");
  box.textContent = text;
  box.style.display = "block";
}

function wireControls(viewer, redraw) {
  const canvas = viewer.canvas, dpr = () => window.devicePixelRatio || 1;
  const pointers = new Map();
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const unit = e.deltaMode === 1 ? 40 : e.deltaMode === 2 ? 800 : 1;
    viewer.zoomAt(e.offsetX * dpr(), e.offsetY * dpr(), Math.exp(-e.deltaY * unit * 0.002));
    redraw();
  }, { passive: false });
  canvas.addEventListener("pointerdown", (e) => {
    canvas.setPointerCapture(e.pointerId);
    pointers.set(e.pointerId, [e.offsetX, e.offsetY]);
    canvas.classList.add("dragging");
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!pointers.has(e.pointerId)) return;
    const before = [...pointers.values()];
    pointers.set(e.pointerId, [e.offsetX, e.offsetY]);
    const after = [...pointers.values()];
    if (after.length === 1) {
      viewer.pan((after[0][0] - before[0][0]) * dpr(), (after[0][1] - before[0][1]) * dpr());
    } else if (after.length === 2) {  // pinch: zoom about the midpoint, and follow the midpoint
      const mid = (p) => [(p[0][0] + p[1][0]) / 2, (p[0][1] + p[1][1]) / 2];
      const dist = (p) => Math.hypot(p[0][0] - p[1][0], p[0][1] - p[1][1]) || 1;
      const m0 = mid(before), m1 = mid(after);
      viewer.pan((m1[0] - m0[0]) * dpr(), (m1[1] - m0[1]) * dpr());
      viewer.zoomAt(m1[0] * dpr(), m1[1] * dpr(), dist(after) / dist(before));
    }
    redraw();
  });
  const release = (e) => {
    pointers.delete(e.pointerId);
    if (!pointers.size) canvas.classList.remove("dragging");
  };
  canvas.addEventListener("pointerup", release);
  canvas.addEventListener("pointercancel", release);
  const split = document.getElementById("split"), splitAt = document.getElementById("split-at");
  split.addEventListener("change", () => { viewer.view.split = split.checked; redraw(); });
  splitAt.addEventListener("input", () => { viewer.view.splitAt = Number(splitAt.value); redraw(); });
  document.getElementById("fit").addEventListener("click", () => { viewer.fit(); redraw(); });
  document.getElementById("save").addEventListener("click", () => {
    const link = document.createElement("a");
    const stem = (viewer.header.title || "field").replace(/\.[^.]*$/, "");
    link.download = `${stem}_view_x${viewer.view.scale.toFixed(2)}.png`;
    link.href = viewer.viewPNG();
    link.click();
  });
  window.addEventListener("resize", () => redraw(true));
}

async function main() {
  const params = new URLSearchParams(location.search);
  const header = await (await fetch("field.json")).json();
  const arrays = decodeArrays(header, await (await fetch("field.bin")).arrayBuffer());
  const lrImage = await loadImage("lr.png");
  const canvas = document.getElementById("view");
  const tile = Math.max(1, Number(params.get("tile")) || DEFAULT_TILE);
  const viewer = new FieldViewer(canvas, header, arrays, lrImage, tile);
  document.getElementById("title").textContent = header.title || "field";
  document.getElementById("label-bicubic").textContent = `bicubic of ${header.bicubic_of || "the LR image"}`;
  let pending = false;
  const resize = () => {
    const dpr = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * dpr)), height = Math.max(1, Math.round(canvas.clientHeight * dpr));
    if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
  };
  const draw = () => {
    pending = false;
    resize();
    const ms = viewer.frame();
    document.getElementById("scale").textContent = `x${viewer.view.scale.toFixed(2)}`;
    document.getElementById("frame").textContent = `frame ${ms.toFixed(1)} ms`;
    document.getElementById("labels").style.display = viewer.view.split ? "flex" : "none";
  };
  const redraw = () => { if (!pending) { pending = true; requestAnimationFrame(draw); } };
  resize();
  viewer.fit();
  wireControls(viewer, redraw);
  draw();
  // What tests and scripts drive: exact views read back as float32 (base64), the view state, frame times.
  window.p2g = {
    viewer,
    info: () => ({ ...header, tiles: viewer.tiles.length, tilesDrawn: viewer.tilesDrawn,
                   renderTarget: viewer.targetFormat === viewer.gl.RGBA32F ? "float32" : "float16",
                   renderer: rendererName(viewer.gl) }),
    render: (width, height, scaleHW, origin, mode, splitX) =>
      toBase64(viewer.renderArray(width, height, [scaleHW[1], scaleHW[0]], origin || [0, 0], mode || "field", splitX)),
    renderView: (mode) => {
      const [width, height] = viewer.size, s = viewer.view.scale;
      return toBase64(viewer.renderArray(width, height, [s, s], viewer.view.origin, mode || "field", viewer.splitX()));
    },
    getView: () => ({ scale: viewer.view.scale, origin: [...viewer.view.origin], size: viewer.size,
                      split: viewer.view.split, splitX: viewer.splitX() }),
    setView: (scale, origin) => { viewer.view.scale = scale; viewer.view.origin = [...origin]; draw(); },
    draw,
    viewPNG: () => viewer.viewPNG(),
    frameTimes: (count) => { const out = []; for (let i = 0; i < count; i++) out.push(viewer.frame()); return out; },
  };
  document.body.dataset.ready = "1";
}

main().catch((err) => {
  showMessage(`p2g view could not start: ${err.message}`);
  document.body.dataset.ready = "error";
  document.body.dataset.error = err.message;
});

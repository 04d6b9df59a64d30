// The browser side of the web client's integration tests: drives Debian's Chromium (headless,
// fake microphone playing a tone) through playwright-core on commands from the Rust test.
//
// Protocol: one JSON command per line on stdin, `{"id": N, "op": "...", ...}`; one JSON answer
// per line on stdout, `{"id": N, "ok": true, "value": ...}` or `{"id": N, "ok": false,
// "error": "..."}`. Each browser is named; each has one page.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const browsers = new Map();

/** A mono 16-bit 48 kHz WAV of a sine at `hz` (Chromium loops it as the microphone). */
function toneWav(path, hz, seconds = 2) {
  const rate = 48000;
  const samples = rate * seconds;
  const data = Buffer.alloc(samples * 2);
  for (let i = 0; i < samples; i++) {
    data.writeInt16LE(Math.round(Math.sin((2 * Math.PI * hz * i) / rate) * 12000), i * 2);
  }
  const header = Buffer.alloc(44);
  header.write('RIFF', 0);
  header.writeUInt32LE(36 + data.length, 4);
  header.write('WAVE', 8);
  header.write('fmt ', 12);
  header.writeUInt32LE(16, 16);
  header.writeUInt16LE(1, 20);
  header.writeUInt16LE(1, 22);
  header.writeUInt32LE(rate, 24);
  header.writeUInt32LE(rate * 2, 28);
  header.writeUInt16LE(2, 32);
  header.writeUInt16LE(16, 34);
  header.write('data', 36);
  header.writeUInt32LE(data.length, 40);
  writeFileSync(path, Buffer.concat([header, data]));
}

/**
 * A Y4M video of `frames` frames of one colour (`rgb`, 0-255 each) with a white bar moving
 * across it, so that the encoder has motion to send; Chromium loops it as the camera.
 */
function cameraY4m(path, [r, g, b], width = 320, height = 240, frames = 30) {
  // BT.601 full range, as C420jpeg says.
  const y = Math.round(0.299 * r + 0.587 * g + 0.114 * b);
  const u = Math.round(128 - 0.168736 * r - 0.331264 * g + 0.5 * b);
  const v = Math.round(128 + 0.5 * r - 0.418688 * g - 0.081312 * b);
  const parts = [Buffer.from(`YUV4MPEG2 W${width} H${height} F30:1 Ip A1:1 C420jpeg\n`)];
  const bar = 16;
  for (let f = 0; f < frames; f++) {
    const luma = Buffer.alloc(width * height, y);
    const x0 = Math.floor((f * (width - bar)) / frames);
    for (let row = 0; row < height; row++) luma.fill(235, row * width + x0, row * width + x0 + bar);
    const chroma = (value) => Buffer.alloc((width / 2) * (height / 2), value);
    parts.push(Buffer.from('FRAME\n'), luma, chroma(u), chroma(v));
  }
  writeFileSync(path, Buffer.concat(parts));
}

async function launch({ name, toneHz = 440, microphone = true, camera = null, width = 1000, height = 900 }) {
  const dir = mkdtempSync(join(tmpdir(), `dialbridge-browser-${name}-`));
  const wav = join(dir, 'tone.wav');
  toneWav(wav, toneHz);
  const args = [
    '--no-sandbox',
    '--disable-gpu',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--allow-loopback-in-peer-connection',
    '--autoplay-policy=no-user-gesture-required',
    '--use-fake-device-for-media-stream',
    `--use-file-for-fake-audio-capture=${wav}`,
  ];
  if (camera) {
    const y4m = join(dir, 'camera.y4m');
    cameraY4m(y4m, camera);
    args.push(`--use-file-for-fake-video-capture=${y4m}`);
  }
  // Without the fake permission prompt, and with prompts denied, the page meets a refused microphone.
  args.push(microphone ? '--use-fake-ui-for-media-stream' : '--deny-permission-prompts');
  const context = await chromium.launchPersistentContext(join(dir, 'profile'), {
    executablePath: CHROMIUM,
    headless: true,
    args,
    viewport: { width, height },
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const entry = { context, page, dir, requests: [], console: [] };
  page.on('request', (r) => entry.requests.push(r.url()));
  page.on('console', (m) => entry.console.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => entry.console.push(`pageerror: ${e.message}`));
  browsers.set(name, entry);
  return true;
}

function get(name) {
  const entry = browsers.get(name);
  if (!entry) throw new Error(`no browser named ${name}`);
  return entry;
}

/**
 * How much of what the page hears is each frequency: the share of the power between 100 Hz
 * and 4 kHz that lies within 30 Hz of it, from an AnalyserNode on the call's remote stream,
 * averaged over `ms`.
 */
async function frequencies(page, hz, ms) {
  return page.evaluate(
    async ({ hz, ms }) => {
      const media = window.dialbridgeApp && window.dialbridgeApp.media;
      if (!media) throw new Error('the page is not in the call');
      const context = new AudioContext();
      await context.resume();
      const analyser = context.createAnalyser();
      analyser.fftSize = 8192;
      analyser.smoothingTimeConstant = 0;
      context.createMediaStreamSource(media.remoteStream).connect(analyser);
      const bins = new Float32Array(analyser.frequencyBinCount);
      const binHz = context.sampleRate / analyser.fftSize;
      const sums = hz.map(() => 0);
      let total = 0;
      const end = performance.now() + ms;
      while (performance.now() < end) {
        await new Promise((r) => setTimeout(r, 100));
        analyser.getFloatFrequencyData(bins);
        for (let i = Math.floor(100 / binHz); i < Math.min(bins.length, 4000 / binHz); i++) {
          const power = Math.pow(10, bins[i] / 10);
          total += power;
          hz.forEach((f, k) => {
            if (Math.abs(i * binHz - f) <= 30) sums[k] += power;
          });
        }
      }
      await context.close();
      const out = {};
      hz.forEach((f, k) => {
        out[f] = total > 0 ? sums[k] / total : 0;
      });
      return out;
    },
    { hz, ms },
  );
}

const ops = {
  launch,
  goto: async ({ name, url }) => {
    await get(name).page.goto(url);
    return true;
  },
  fill: async ({ name, selector, value }) => {
    await get(name).page.locator(selector).fill(value);
    return true;
  },
  click: async ({ name, selector }) => {
    await get(name).page.locator(selector).click();
    return true;
  },
  press: async ({ name, selector, key }) => {
    await get(name).page.locator(selector).press(key);
    return true;
  },
  // Waits until the element's text contains `text`; answers the text.
  waitText: async ({ name, selector, text, timeoutMs = 30000 }) => {
    const locator = get(name).page.locator(selector);
    const end = Date.now() + timeoutMs;
    let last = null;
    while (Date.now() < end) {
      last = (await locator.allTextContents()).join(' | ');
      if (last.includes(text)) return last;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`"${selector}" never showed "${text}"; last: ${JSON.stringify(last)}`);
  },
  text: async ({ name, selector }) => (await get(name).page.locator(selector).allTextContents()).join(' | '),
  visible: async ({ name, selector }) => get(name).page.locator(selector).isVisible(),
  waitVisible: async ({ name, selector, timeoutMs = 30000 }) => {
    await get(name).page.locator(selector).waitFor({ state: 'visible', timeout: timeoutMs });
    return true;
  },
  frequencies: async ({ name, hz, ms = 1500 }) => frequencies(get(name).page, hz, ms),
  // What a <video> element shows: frames decoded so far, its size, and the mean colour of its
  // picture (the moving bar is a small part of it).
  picture: async ({ name, selector }) =>
    get(name).page.locator(selector).first().evaluate((video) => {
      const quality = video.getVideoPlaybackQuality();
      const { videoWidth: width, videoHeight: height } = video;
      const out = { frames: quality.totalVideoFrames - quality.droppedVideoFrames, width, height, rgb: null };
      if (!width || !height) return out;
      const canvas = document.createElement('canvas');
      canvas.width = width;
      canvas.height = height;
      const context = canvas.getContext('2d');
      context.drawImage(video, 0, 0);
      const data = context.getImageData(0, 0, width, height).data;
      const sum = [0, 0, 0];
      for (let i = 0; i < data.length; i += 4) for (let c = 0; c < 3; c++) sum[c] += data[i + c];
      out.rgb = sum.map((s) => Math.round(s / (data.length / 4)));
      return out;
    }),
  // Hands `data` to the origin's service worker as a push message (CDP), as a push service would
  // once it decrypted it; notifications are allowed for the origin first.
  deliverPush: async ({ name, origin, data }) => {
    const { context, page } = get(name);
    await context.grantPermissions(['notifications'], { origin });
    const cdp = await context.newCDPSession(page);
    const registration = new Promise((resolve) =>
      cdp.on('ServiceWorker.workerRegistrationUpdated', ({ registrations }) => {
        const found = registrations.find((r) => r.scopeURL.startsWith(origin) && !r.isDeleted);
        if (found) resolve(found.registrationId);
      }),
    );
    await cdp.send('ServiceWorker.enable');
    const registrationId = await registration;
    await cdp.send('ServiceWorker.deliverPushMessage', { origin, registrationId, data });
    await cdp.detach();
    return true;
  },
  evaluate: async ({ name, js }) => get(name).page.evaluate(js),
  screenshot: async ({ name, path }) => {
    await get(name).page.screenshot({ path, fullPage: true });
    return path;
  },
  requests: async ({ name }) => get(name).requests,
  console: async ({ name }) => get(name).console,
  // Uncaught exceptions and failed SDK listeners of every page: a test fails on any.
  problems: async () =>
    [...browsers.entries()].flatMap(([name, b]) =>
      b.console.filter((l) => l.startsWith('pageerror') || l.includes('dialbridge: a ')).map((l) => `${name}: ${l}`),
    ),
  close: async ({ name }) => {
    const entry = get(name);
    browsers.delete(name);
    await entry.context.close();
    rmSync(entry.dir, { recursive: true, force: true });
    return true;
  },
};

async function closeAll() {
  for (const name of [...browsers.keys()]) await ops.close({ name }).catch(() => {});
}

const lines = createInterface({ input: process.stdin });
let queue = Promise.resolve();
lines.on('line', (line) => {
  // Commands run one at a time, in order.
  queue = queue.then(async () => {
    let command;
    try {
      command = JSON.parse(line);
    } catch {
      return;
    }
    const reply = { id: command.id };
    try {
      const op = ops[command.op];
      if (!op) throw new Error(`unknown op ${command.op}`);
      reply.value = await op(command);
      reply.ok = true;
    } catch (e) {
      reply.ok = false;
      reply.error = String(e && e.stack ? e.stack : e);
    }
    process.stdout.write(`${JSON.stringify(reply)}\n`);
  });
});
lines.on('close', () => {
  queue.then(closeAll).then(() => process.exit(0));
});

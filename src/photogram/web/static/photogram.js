// photogram's pages work without this script; it only makes them nicer: blurred
// placeholders while photos load, carousel buttons, liking and "load more" without
// leaving the page, and previews on the upload page.
"use strict";

(() => {
  // --- blurhash placeholders (https://blurha.sh), decoded into the canvas under a photo ---

  const DIGITS =
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~";

  const decode83 = (text) => {
    let value = 0;
    for (const c of text) {
      const digit = DIGITS.indexOf(c);
      if (digit < 0) throw new Error("not a blurhash");
      value = value * 83 + digit;
    }
    return value;
  };
  const toLinear = (v) => {
    const x = v / 255;
    return x <= 0.04045 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4);
  };
  const toSRGB = (v) => {
    const x = Math.max(0, Math.min(1, v));
    return x <= 0.0031308
      ? Math.round(x * 12.92 * 255 + 0.5)
      : Math.round((1.055 * Math.pow(x, 1 / 2.4) - 0.055) * 255 + 0.5);
  };
  const signPow = (v, e) => Math.sign(v) * Math.pow(Math.abs(v), e);

  function blurhashPixels(hash, width, height) {
    const size = decode83(hash[0]);
    const nx = (size % 9) + 1;
    const ny = Math.floor(size / 9) + 1;
    if (hash.length !== 4 + 2 * nx * ny) throw new Error("bad blurhash length");
    const maximum = (decode83(hash[1]) + 1) / 166;
    const dc = decode83(hash.substring(2, 6));
    const colours = [[toLinear(dc >> 16), toLinear((dc >> 8) & 255), toLinear(dc & 255)]];
    for (let i = 1; i < nx * ny; i++) {
      const v = decode83(hash.substring(4 + i * 2, 6 + i * 2));
      colours.push([
        signPow((Math.floor(v / 361) - 9) / 9, 2) * maximum,
        signPow(((Math.floor(v / 19) % 19) - 9) / 9, 2) * maximum,
        signPow(((v % 19) - 9) / 9, 2) * maximum,
      ]);
    }
    const pixels = new Uint8ClampedArray(width * height * 4);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        let r = 0, g = 0, b = 0;
        for (let j = 0; j < ny; j++) {
          const cy = Math.cos((Math.PI * y * j) / height);
          for (let i = 0; i < nx; i++) {
            const basis = Math.cos((Math.PI * x * i) / width) * cy;
            const c = colours[i + j * nx];
            r += c[0] * basis;
            g += c[1] * basis;
            b += c[2] * basis;
          }
        }
        const at = 4 * (x + y * width);
        pixels[at] = toSRGB(r);
        pixels[at + 1] = toSRGB(g);
        pixels[at + 2] = toSRGB(b);
        pixels[at + 3] = 255;
      }
    }
    return pixels;
  }

  function placeholders(root) {
    for (const canvas of root.querySelectorAll("canvas[data-blurhash]")) {
      const photo = canvas.closest(".photo");
      const img = photo && photo.querySelector("img");
      if (img && img.complete && img.naturalWidth) {
        photo.classList.add("loaded");
        continue;
      }
      try {
        const { width, height } = canvas;
        const context = canvas.getContext("2d");
        const image = context.createImageData(width, height);
        image.data.set(blurhashPixels(canvas.dataset.blurhash, width, height));
        context.putImageData(image, 0, 0);
      } catch (error) {
        // A malformed hash leaves the plain grey placeholder.
      }
      if (img) img.addEventListener("load", () => photo.classList.add("loaded"), { once: true });
    }
  }

  // --- carousels --------------------------------------------------------------------------

  function carousels(root) {
    for (const carousel of root.querySelectorAll("[data-carousel]")) {
      const slides = carousel.querySelector(".slides");
      const prev = carousel.querySelector("[data-prev]");
      const next = carousel.querySelector("[data-next]");
      if (!slides || !prev || !next) continue;
      const dots = carousel.querySelectorAll(".dots span");
      const count = slides.children.length;
      const current = () => Math.round(slides.scrollLeft / Math.max(slides.clientWidth, 1));
      const update = () => {
        const at = current();
        const focused = document.activeElement;
        prev.disabled = at <= 0;
        next.disabled = at >= count - 1;
        // A button that goes away at either end hands the keyboard focus to the other.
        if (focused === next && next.disabled) prev.focus();
        if (focused === prev && prev.disabled) next.focus();
        dots.forEach((dot, i) => dot.classList.toggle("on", i === at));
      };
      const go = (step) => {
        const at = Math.max(0, Math.min(count - 1, current() + step));
        slides.scrollTo({ left: at * slides.clientWidth });
      };
      prev.hidden = next.hidden = false;
      prev.addEventListener("click", () => go(-1));
      next.addEventListener("click", () => go(1));
      slides.addEventListener("scroll", update, { passive: true });
      update();
    }
  }

  // --- liking without reloading ---------------------------------------------------------

  function likes(root) {
    for (const form of root.querySelectorAll("form[data-like]")) {
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        const button = form.querySelector("button");
        button.disabled = true;
        try {
          const response = await fetch(form.action, {
            method: "POST",
            body: new FormData(form),
            headers: { "X-Requested-With": "fetch", Accept: "application/json" },
            credentials: "same-origin",
          });
          if (!response.ok) throw new Error(String(response.status));
          const body = await response.json();
          button.setAttribute("aria-pressed", body.favourited ? "true" : "false");
          form.action = `${form.dataset.path}/${body.favourited ? "unlike" : "like"}`;
          const card = form.closest("article");
          const count = card && card.querySelector("[data-like-count]");
          if (count) {
            const n = body.favourites_count;
            count.textContent = `${n.toLocaleString("en")} ${n === 1 ? "like" : "likes"}`;
          }
        } catch (error) {
          form.submit(); // the page's own way: post the form and show the answer
        } finally {
          button.disabled = false;
        }
      });
    }
  }

  // --- "load more" in the feed ----------------------------------------------------------

  function loadMore(root) {
    for (const link of root.querySelectorAll("a[data-more]")) {
      link.addEventListener("click", async (event) => {
        event.preventDefault();
        const holder = link.closest(".more");
        link.setAttribute("aria-busy", "true");
        link.textContent = "Loading…";
        try {
          const response = await fetch(link.href, {
            headers: { "X-Requested-With": "fetch" },
            credentials: "same-origin",
          });
          if (!response.ok) throw new Error(String(response.status));
          const template = document.createElement("template");
          template.innerHTML = await response.text();
          const added = template.content;
          const first = added.querySelector("article");
          enhance(added);
          holder.replaceWith(added);
          if (first) {
            first.setAttribute("tabindex", "-1");
            first.focus({ preventScroll: true });
          }
        } catch (error) {
          window.location.href = link.href;
        }
      });
    }
  }

  // --- the upload page --------------------------------------------------------------------

  function upload(root) {
    const form = root.querySelector("form[data-upload]");
    if (!form) return;
    const input = form.querySelector("input[type=file][name=photos]");
    const previews = form.querySelector("[data-previews]");
    const fallback = form.querySelector("[data-alt-fallback]");
    const maxPhotos = Number(form.dataset.maxPhotos);
    const maxBytes = Number(form.dataset.maxBytes);
    const swatches = form.querySelectorAll("[data-swatch]");
    let urls = [];

    const chosenFilter = () => {
      const checked = form.querySelector("input[name=filter]:checked");
      return checked ? checked.value : "normal";
    };
    const applyFilter = () => {
      for (const img of previews.querySelectorAll("img")) {
        img.className = `f-${chosenFilter()}`;
      }
    };

    input.addEventListener("change", () => {
      urls.forEach((url) => URL.revokeObjectURL(url));
      urls = [];
      previews.replaceChildren();
      const files = Array.from(input.files || []);
      let problem = "";
      if (files.length > maxPhotos) problem = `Choose at most ${maxPhotos} photos.`;
      const big = files.find((f) => f.size > maxBytes);
      if (big) problem = `${big.name} is too large.`;
      input.setCustomValidity(problem);
      if (problem) input.reportValidity();
      if (fallback && files.length) fallback.remove();
      files.forEach((file, index) => {
        const url = URL.createObjectURL(file);
        urls.push(url);
        const item = document.createElement("div");
        item.className = "preview";
        const img = document.createElement("img");
        img.src = url;
        img.alt = `Preview of photo ${index + 1}`;
        const field = document.createElement("div");
        const label = document.createElement("label");
        label.htmlFor = `description_${index}`;
        label.textContent = `Describe photo ${index + 1} for people who cannot see it (alt text)`;
        const text = document.createElement("textarea");
        text.id = text.name = `description_${index}`;
        text.rows = 2;
        text.maxLength = 1500;
        field.append(label, text);
        item.append(img, field);
        previews.append(item);
      });
      if (urls.length) {
        swatches.forEach((swatch) => {
          swatch.style.backgroundImage = `url("${urls[0]}")`;
        });
      }
      applyFilter();
    });
    for (const radio of form.querySelectorAll("input[name=filter]")) {
      radio.addEventListener("change", applyFilter);
    }
    form.addEventListener("submit", () => {
      const button = form.querySelector("button[type=submit]");
      if (button && button.dataset.busyLabel) {
        // After the browser has taken the form: a disabled button would not be sent.
        setTimeout(() => {
          button.disabled = true;
          button.textContent = button.dataset.busyLabel;
        });
      }
    });
  }

  // --- asking before deleting -----------------------------------------------------------

  function confirmations(root) {
    for (const form of root.querySelectorAll("form[data-confirm]")) {
      form.addEventListener("submit", (event) => {
        if (!window.confirm(form.dataset.confirm)) event.preventDefault();
      });
    }
  }

  function enhance(root) {
    placeholders(root);
    carousels(root);
    likes(root);
    loadMore(root);
    confirmations(root);
  }

  enhance(document);
  upload(document);
})();

/// <reference types="vitest/config" />
// Builds the single web application (every role, FM-13) into the Python package's static folder,
// which `hotline serve` serves at `/`. Built files are generated, never committed.
import { copyFileSync, existsSync, mkdirSync } from 'node:fs'
import { fileURLToPath, URL } from 'node:url'
import { resolve } from 'node:path'
import vue from '@vitejs/plugin-vue'
import { defineConfig, type Plugin } from 'vite'

const outDir = fileURLToPath(new URL('../src/hotline/web/static', import.meta.url))
// The application's routes. Each gets a copy of index.html, so a plain static file server (one that
// serves `<dir>/index.html` for `/<dir>/`) opens deep links and reloads without an SPA fallback rule.
const routes = ['login', 'agent', 'supervisor', 'wallboard', 'admin']

function routeEntryPages(): Plugin {
  return {
    name: 'hotline-route-entry-pages',
    apply: 'build',
    closeBundle() {
      const index = resolve(outDir, 'index.html')
      if (!existsSync(index)) return
      for (const route of routes) {
        mkdirSync(resolve(outDir, route), { recursive: true })
        copyFileSync(index, resolve(outDir, route, 'index.html'))
      }
    },
  }
}

const api = process.env.HOTLINE_API ?? 'http://127.0.0.1:8080'

export default defineConfig({
  base: '/',
  plugins: [vue(), routeEntryPages()],
  define: {
    // vue-i18n's compile-time flags: Composition API only, no devtools in production.
    __VUE_I18N_FULL_INSTALL__: true,
    __VUE_I18N_LEGACY_API__: false,
    __INTLIFY_PROD_DEVTOOLS__: false,
  },
  resolve: {
    alias: { '@': fileURLToPath(new URL('./src', import.meta.url)) },
  },
  build: {
    outDir,
    emptyOutDir: true,
    target: 'es2020',
    chunkSizeWarningLimit: 1200,
    rollupOptions: {
      output: {
        manualChunks(id) {
          if (!id.includes('node_modules')) return undefined
          if (id.includes('element-plus') || id.includes('@element-plus')) return 'element-plus'
          if (id.includes('echarts') || id.includes('zrender')) return 'echarts'
          if (id.includes('@vue-flow') || id.includes('d3-')) return 'vue-flow'
          return 'vendor'
        },
      },
    },
  },
  server: {
    proxy: {
      '/api': { target: api, changeOrigin: false, ws: true },
    },
  },
  test: {
    environment: 'happy-dom',
    include: ['tests/**/*.test.ts'],
    testTimeout: 10_000,
  },
})

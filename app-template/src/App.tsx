export default function App() {
  return (
    <main className="flex min-h-screen flex-col items-center justify-center gap-4 bg-slate-950 text-slate-100">
      <h1 className="text-4xl font-bold tracking-tight">Hello from the sandbox</h1>
      <p className="text-slate-400">
        Edit <code className="font-mono text-sky-400">src/App.tsx</code> and save to see changes.
      </p>
    </main>
  );
}

from ember.compiler.cli import main

raise SystemExit(main())

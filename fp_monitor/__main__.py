from fp_monitor.cli.app import main

raise SystemExit(main())
